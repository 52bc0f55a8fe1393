"""The whole login through the controller's API, for every provider and login mode.

start → login URL → the user signs in at the test bed's provider → pastes →
authenticated → the vault holds the files the CLI wrote → the auth VM is gone;
the SSE stream shows the phases in order. On SQLite and PostgreSQL, with the
VM manager on the fake backend (the real agent running the fake CLIs).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from remotecli.controller.db.models import VmState
from remotecli.controller.vault import credentials
from remotecli.providers import get_provider
from tests.support.controller import Controller
from tests.support.streams import EventReader
from tests.support.user import answer_for

ORDER = [
    "claiming_vm",
    "starting_login",
    "awaiting_user",
    "verifying",
    "capturing",
    "authenticated",
]
#: The file with the access token, and where the token is in it.
TOKEN_FILES = {
    "claude_code": (".claude/.credentials.json", ("claudeAiOauth", "accessToken"), "claude"),
    "codex": (".codex/auth.json", ("tokens", "access_token"), "codex"),
    "gemini_cli": (".gemini/oauth_creds.json", ("access_token",), "gemini"),
}


def _stored_files(harness: Controller, user_id: str, provider: str) -> tuple[int, dict[str, Any]]:
    async def read() -> tuple[int, dict[str, Any]]:
        async with harness.context.sessions() as session:
            record = await credentials.current(session, user_id, provider)
            assert record is not None
            files = credentials.open_files(harness.context.vault, record)
            return record.version, {f.path: (f.mode, json.loads(f.data())) for f in files}

    return harness.call(read())


@pytest.mark.parametrize(
    ("provider", "mode"),
    [
        ("claude_code", "paste_code"),
        ("codex", "localhost_callback"),
        ("codex", "device_code"),
        ("gemini_cli", "paste_code"),
    ],
)
def test_a_whole_login_ends_in_the_vault_with_the_vm_gone(
    harness: Controller, provider: str, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    web = harness.client("service")

    started = web.post(
        "/api/auth/start", json={"userId": "u-1", "provider": provider, "mode": mode}
    )

    assert started.status_code == 201, started.text
    session = started.json()
    assert (session["phase"], session["mode"], session["provider"]) == (
        "awaiting_user",
        mode,
        provider,
    )
    assert session["loginUrl"].startswith(harness.oauth.url)
    assert session["instructions"]
    assert session["timings"]["claimMs"] > 0 and session["timings"]["urlMs"] > 0
    assert session["vmOrigin"] in ("pool", "restore", "cold")
    assert (session["userCode"] is not None) == (mode == "device_code")
    vm_id = session["vmId"]
    assert harness.vm_row(vm_id).state == VmState.CLAIMED
    events = EventReader(web, f"/api/auth/sessions/{session['id']}/events")

    answer = answer_for(session)
    if answer is not None:
        done = web.post(f"/api/auth/sessions/{session['id']}/code", json=answer)
        assert done.status_code == 200, done.text
        final = done.json()
    else:
        final = harness.wait_phase(web, session["id"], {"authenticated", "failed"})

    assert (final["phase"], final["ended"], final["error"]) == ("authenticated", True, None)
    events.wait()
    phases = events.phases()
    assert phases[0] == "awaiting_user" and phases[-1] == "authenticated", phases
    assert phases == sorted(phases, key=ORDER.index), phases
    assert events.content_type is not None and events.content_type.startswith("text/event-stream")
    # The vault holds what the CLI wrote: the provider's files, with the token it was issued.
    version, files = _stored_files(harness, "u-1", provider)
    assert version == 1
    assert sorted(files) == sorted(f.path for f in get_provider(provider).credential_files)
    path, keys, server_name = TOKEN_FILES[provider]
    value: Any = files[path][1]
    for key in keys:
        value = value[key]
    assert value in {t.access_token for t in harness.oauth.issued_tokens(server_name)}
    assert all(mode == "0600" for mode, _ in files.values())
    # The auth VM is gone.
    assert harness.vm_row(vm_id).state == VmState.STOPPED
    assert harness.read(lambda: harness.vms.get(vm_id)) is None
    # What the user sees: connected, never the token.
    listed = web.get("/api/users/u-1/credentials")
    assert [(c["provider"], c["state"], c["kind"], c["version"]) for c in listed.json()] == [
        (provider, "connected", "oauth", 1)
    ]
    assert listed.json()[0]["expiresAt"] is not None
    assert "login ended" in caplog.text  # the controller's log was captured and checked
    secrets = [value, *(answer or {}).values()]
    for text in (listed.text, json.dumps(final), json.dumps(events.events), caplog.text):
        assert not any(secret in text for secret in secrets)


def test_openapi_documents_the_routes_and_takes_secrets_write_only(harness: Controller) -> None:
    spec = harness.client(None).get("/openapi.json").json()
    schemas = spec["components"]["schemas"]

    assert {
        "/api/auth/start",
        "/api/auth/sessions/{session_id}/code",
        "/api/users/{user_id}/credentials",
    } <= set(spec["paths"])
    api_key = schemas["AuthStart"]["properties"]["apiKey"]["anyOf"][0]
    callback = schemas["CodeSubmit"]["properties"]["callbackUrl"]["anyOf"][0]
    assert (api_key["writeOnly"], api_key["format"]) == (True, "password")
    assert callback["writeOnly"] is True
    assert "examples" not in api_key and "examples" not in callback
