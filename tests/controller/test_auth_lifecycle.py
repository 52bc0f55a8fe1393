"""Every other way a login ends: API key, cancel, deadline, a newer login, a VM that never
gets ready, a controller restart. Each leaves no VM behind and says why."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from remotecli.controller.db.models import VmState
from remotecli.controller.settings import Settings
from remotecli.controller.vault import credentials
from remotecli.testbed import OAuthServer
from remotecli.vmm.fake.backend import FakeBackend, FakeFault
from tests.support.controller import Controller, auth_controller
from tests.support.controller_process import crash_during_login
from tests.support.poll import eventually
from tests.support.streams import EventReader
from tests.support.user import answer_for


@pytest.mark.parametrize("provider", ["claude_code", "codex", "gemini_cli"])
def test_api_key_mode_stores_the_key_without_a_vm(harness: Controller, provider: str) -> None:
    web = harness.client("service")
    key = f"sk-test-{provider}-0123456789"

    response = web.post(
        "/api/auth/start",
        json={"userId": "u-1", "provider": provider, "mode": "api_key", "apiKey": key},
    )

    assert response.status_code == 201, response.text
    session = response.json()
    assert (session["phase"], session["mode"], session["ended"], session["vmId"]) == (
        "authenticated",
        "api_key",
        True,
        None,
    )
    assert harness.counts()["vms"] == 0
    listed = web.get("/api/users/u-1/credentials").json()
    assert [(c["provider"], c["kind"], c["state"], c["expiresAt"]) for c in listed] == [
        (provider, "api_key", "connected", None)
    ]

    async def opened() -> str | None:
        async with harness.context.sessions() as db:
            record = await credentials.current(db, "u-1", provider)
            assert record is not None
            return credentials.open_secret(harness.context.vault, record).api_key

    assert harness.call(opened()) == key
    assert key not in response.text + json.dumps(listed)
    # No mode but a key: API-key mode is meant; a new key is a new version.
    again = web.post(
        "/api/auth/start", json={"userId": "u-1", "provider": provider, "apiKey": key + "2"}
    )
    assert again.json()["mode"] == "api_key"
    assert web.get("/api/users/u-1/credentials").json()[0]["version"] == 2


def test_disconnect_deletes_every_version(harness: Controller) -> None:
    web = harness.client("service")
    for n in range(3):
        web.post(
            "/api/auth/start", json={"userId": "u-1", "provider": "codex", "apiKey": f"sk-{n}"}
        )
    web.post("/api/auth/start", json={"userId": "u-1", "provider": "gemini_cli", "apiKey": "g"})

    response = web.delete("/api/users/u-1/credentials/codex")

    assert response.json() == {"provider": "codex", "deletedVersions": 3}
    assert [c["provider"] for c in web.get("/api/users/u-1/credentials").json()] == ["gemini_cli"]
    assert harness.counts()["credentials"] == 1


def test_cancel_stops_the_login_and_destroys_the_vm(harness: Controller) -> None:
    web = harness.client("service")
    session = web.post("/api/auth/start", json={"userId": "u-1", "provider": "codex"}).json()
    sid = session["id"]
    events = EventReader(web, f"/api/auth/sessions/{sid}/events")

    cancelled = web.delete(f"/api/auth/sessions/{sid}")

    assert cancelled.status_code == 200, cancelled.text
    body = cancelled.json()
    assert (body["phase"], body["ended"], body["error"]["code"]) == ("cancelled", True, "cancelled")
    assert harness.vm_row(session["vmId"]).state == VmState.STOPPED
    assert harness.counts()["handles"] == 0
    assert events.wait()[-1]["phase"] == "cancelled"
    assert web.delete(f"/api/auth/sessions/{sid}").json()["phase"] == "cancelled"  # twice: fine
    late = web.post(f"/api/auth/sessions/{sid}/code", json={"callbackUrl": "http://localhost/"})
    assert (late.status_code, late.json()["code"]) == (409, "session_ended")


def test_an_authenticated_login_cannot_be_cancelled(harness: Controller) -> None:
    web = harness.client("service")
    session = web.post("/api/auth/start", json={"userId": "u-1", "provider": "claude_code"}).json()
    answer = answer_for(session)
    web.post(f"/api/auth/sessions/{session['id']}/code", json=answer)

    response = web.delete(f"/api/auth/sessions/{session['id']}")

    assert (response.status_code, response.json()["code"]) == (409, "session_ended")
    assert harness.counts()["credentials"] == 1


def test_a_newer_login_for_the_same_provider_supersedes_the_older(harness: Controller) -> None:
    web = harness.client("service")
    first = web.post("/api/auth/start", json={"userId": "u-1", "provider": "claude_code"}).json()
    other = web.post("/api/auth/start", json={"userId": "u-1", "provider": "codex"}).json()

    second = web.post("/api/auth/start", json={"userId": "u-1", "provider": "claude_code"}).json()

    old = harness.wait_phase(web, first["id"], {"cancelled"})
    assert (old["phase"], old["error"]["code"]) == ("cancelled", "superseded")
    assert harness.vm_row(first["vmId"]).state == VmState.STOPPED
    assert web.get(f"/api/auth/sessions/{other['id']}").json()["phase"] == "awaiting_user"
    assert second["phase"] == "awaiting_user"
    assert (
        web.post(f"/api/auth/sessions/{second['id']}/code", json=answer_for(second)).json()["phase"]
        == "authenticated"
    )


def test_the_deadline_ends_a_login_nobody_finishes(
    make_settings: Callable[..., Settings], oauth_server: OAuthServer
) -> None:
    with auth_controller(make_settings(auth_session_seconds=2.0), oauth_server) as harness:
        web = harness.client("service")
        session = web.post(
            "/api/auth/start", json={"userId": "u-1", "provider": "gemini_cli"}
        ).json()
        events = EventReader(web, f"/api/auth/sessions/{session['id']}/events")

        final = events.wait(20)[-1]

        assert (final["phase"], final["error"]["code"]) == ("expired", "login_expired")
        assert "2 s" in final["error"]["message"]
        assert harness.vm_row(session["vmId"]).state == VmState.STOPPED
        assert harness.counts()["handles"] == 0
        late = web.post(f"/api/auth/sessions/{session['id']}/code", json={"code": "x"})
        assert (late.status_code, late.json()["code"]) == (409, "session_ended")


def test_a_vm_that_never_gets_ready_is_a_503_with_the_evidence(harness: Controller) -> None:
    web = harness.client("service")
    backend = harness.vms.backend
    assert isinstance(backend, FakeBackend)
    harness.read(lambda: backend.fail_next(FakeFault.CRASHES))

    response = web.post("/api/auth/start", json={"userId": "u-1", "provider": "claude_code"})

    assert response.status_code == 503, response.text
    body = response.json()
    assert body["code"] == "vm_not_ready"
    assert "simulated crash" in body["hint"] and "simulated crash" in body["consoleTail"]
    assert body["lastPhase"] == "VMM_STARTED" and body["cause"] == "agent_crashed"
    session = web.get(f"/api/auth/sessions/{body['sessionId']}").json()
    assert (session["phase"], session["error"]["code"]) == ("failed", "vm_not_ready")
    assert session["error"]["detail"]["consoleTail"] == body["consoleTail"]
    counts = harness.counts()
    assert (counts["live_vms"], counts["handles"], counts["credentials"]) == (0, 0, 0)
    # The next login gets a healthy VM.
    retry = web.post("/api/auth/start", json={"userId": "u-1", "provider": "claude_code"})
    assert retry.status_code == 201 and retry.json()["phase"] == "awaiting_user"


def test_the_stream_sends_heartbeats_while_the_user_is_away(harness: Controller) -> None:
    web = harness.client("service")
    session = web.post("/api/auth/start", json={"userId": "u-1", "provider": "codex"}).json()
    harness.flows.heartbeat_seconds = 0.2
    events = EventReader(web, f"/api/auth/sessions/{session['id']}/events")

    eventually(
        f"two heartbeats; comments so far: {events.comments}", lambda: len(events.comments) >= 2, 10
    )
    web.delete(f"/api/auth/sessions/{session['id']}")

    assert events.comments[:2] == [": heartbeat", ": heartbeat"]
    assert events.wait()[0]["phase"] == "awaiting_user"
    assert events.phases()[-1] == "cancelled"
    assert events.status == 200


def test_a_controller_stop_ends_its_logins(
    make_settings: Callable[..., Settings], oauth_server: OAuthServer
) -> None:
    settings = make_settings()
    with auth_controller(settings, oauth_server) as first:
        web = first.client("service")
        session = web.post("/api/auth/start", json={"userId": "u-1", "provider": "codex"}).json()
        token = first.token("service")

    with auth_controller(settings, oauth_server) as second:
        stopped = second.client(token).get(f"/api/auth/sessions/{session['id']}").json()

        assert (stopped["phase"], stopped["error"]["code"]) == ("failed", "controller_stopped")
        assert second.vm_row(session["vmId"]).state == VmState.STOPPED


def test_a_login_cut_by_a_controller_crash_fails_and_leaves_no_vm(
    make_settings: Callable[..., Settings], oauth_server: OAuthServer
) -> None:
    settings = make_settings()
    crashed = crash_during_login(settings, oauth_server, "claude_code")
    assert crashed["phase"] == "awaiting_user"

    with auth_controller(settings, oauth_server) as harness:
        web = harness.client("service")
        session = web.get(f"/api/auth/sessions/{crashed['sessionId']}").json()

        assert (session["phase"], session["error"]["code"]) == ("failed", "controller_restarted")
        # The VM manager adopted the running auth VM; the login flow destroyed it.
        assert harness.vm_row(crashed["vmId"]).state == VmState.STOPPED
        assert harness.counts()["handles"] == 0
        late = web.post(f"/api/auth/sessions/{crashed['sessionId']}/code", json={"code": "a#b"})
        assert (late.status_code, late.json()["code"]) == (409, "session_ended")
    # (state_dir checks that no instance is left on the host.)
