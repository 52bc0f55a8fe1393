"""Bad input and wrong callers on every login and credentials route: a 4xx with a code and a
message, and nothing half-written (no session, credential, user or VM left behind)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pytest

from remotecli.controller.db.models import VmState
from remotecli.testbed import login
from tests.support.controller import Controller
from tests.support.user import PASSWORD, USER, answer_for


def error_of(response: httpx.Response) -> tuple[int, str]:
    body = response.json()
    assert body["message"], body
    return response.status_code, body["code"]


def start(client: httpx.Client, **body: Any) -> httpx.Response:
    return client.post("/api/auth/start", json={"userId": "u-1", **body})


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"provider": "cursor"}, (400, "unknown_provider")),
        ({"provider": "claude_code", "mode": "device_code"}, (400, "unsupported_login_mode")),
        ({"provider": "codex", "mode": "telepathy"}, (400, "unsupported_login_mode")),
        ({"provider": "codex", "mode": "api_key"}, (400, "api_key_required")),
        ({"provider": "codex", "mode": "api_key", "apiKey": "  "}, (400, "invalid_api_key")),
        ({"provider": "codex", "mode": "api_key", "apiKey": "a b"}, (400, "invalid_api_key")),
        (
            {"provider": "codex", "mode": "device_code", "apiKey": "sk"},
            (400, "api_key_not_expected"),
        ),
        ({"provider": "codex", "apiKey": "x" * 5000}, (422, "invalid_request")),
        ({}, (422, "invalid_request")),
        ({"provider": "codex", "extra": 1}, (422, "invalid_request")),
        ({"provider": "codex", "userId": "../etc"}, (422, "invalid_request")),
    ],
)
def test_bad_starts_are_refused_before_anything_is_written(
    harness: Controller, body: dict[str, Any], expected: tuple[int, str]
) -> None:
    web = harness.client("service")
    before = harness.counts()

    response = start(web, **body)

    assert error_of(response) == expected
    assert harness.counts() == before  # no user, session, credential or VM
    assert "x" * 100 not in response.text  # a refused key is not echoed


def test_unknown_sessions_are_404_on_every_route(harness: Controller) -> None:
    web = harness.client("service")
    for method, path, body in [
        ("GET", "/api/auth/sessions/auth_nope", None),
        ("GET", "/api/auth/sessions/auth_nope/events", None),
        ("POST", "/api/auth/sessions/auth_nope/code", {"code": "x#y"}),
        ("DELETE", "/api/auth/sessions/auth_nope", None),
    ]:
        response = web.request(method, path, json=body)
        assert error_of(response) == (404, "unknown_session"), (method, path)


def test_callers_see_only_their_users_sessions(harness: Controller) -> None:
    alice = harness.client("user:alice")
    bob = harness.client("user:bob")
    session = start(alice, userId="alice", provider="claude_code").json()
    sid = session["id"]

    assert error_of(start(alice, userId="bob", provider="claude_code")) == (403, "forbidden_user")
    # Bob's answer for Alice's session is the answer for a session that does not exist.
    for method, path, body in [
        ("GET", f"/api/auth/sessions/{sid}", None),
        ("GET", f"/api/auth/sessions/{sid}/events", None),
        ("POST", f"/api/auth/sessions/{sid}/code", {"code": "x#y"}),
        ("DELETE", f"/api/auth/sessions/{sid}", None),
    ]:
        assert error_of(bob.request(method, path, json=body)) == (404, "unknown_session")
    for headers, code in [
        ({}, "token_required"),
        ({"Authorization": "Bearer rcli_user_nope"}, "invalid_token"),
    ]:
        anonymous = harness.client(None)
        for method, path in [
            ("POST", "/api/auth/start"),
            ("GET", f"/api/auth/sessions/{sid}"),
            ("GET", f"/api/auth/sessions/{sid}/events"),
            ("POST", f"/api/auth/sessions/{sid}/code"),
            ("DELETE", f"/api/auth/sessions/{sid}"),
            ("GET", "/api/users/alice/credentials"),
            ("DELETE", "/api/users/alice/credentials/codex"),
        ]:
            response = anonymous.request(method, path, headers=headers, json={})
            assert error_of(response) == (401, code), (method, path)
    # Bob's failed attempts changed nothing: Alice's login is still waiting for her.
    assert alice.get(f"/api/auth/sessions/{sid}").json()["phase"] == "awaiting_user"
    assert harness.client("service").get(f"/api/auth/sessions/{sid}").status_code == 200


def test_only_a_service_token_creates_users_on_the_fly(harness: Controller) -> None:
    admin = harness.client("admin")
    web = harness.client("service")

    assert error_of(
        start(admin, userId="new-1", provider="codex", mode="api_key", apiKey="sk-1")
    ) == (404, "unknown_user")
    assert admin.get("/api/users/new-1").status_code == 404

    created = start(web, userId="new-1", provider="codex", mode="api_key", apiKey="sk-1")
    assert created.status_code == 201, created.text
    assert admin.get("/api/users/new-1").status_code == 200


def _with_state(url: str, state: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query["state"] = state
    return urlunsplit(parts._replace(query=urlencode(query)))


def test_wrong_answers_come_back_with_the_agents_code_and_the_login_goes_on(
    harness: Controller,
) -> None:
    web = harness.client("service")
    session = start(web, provider="codex", mode="localhost_callback").json()
    sid = session["id"]
    outcome = login(session["loginUrl"], USER, PASSWORD)
    assert outcome.redirect_url is not None
    good = outcome.redirect_url

    for body, expected in [
        ({"callbackUrl": _with_state(good, "forged")}, (400, "state_mismatch")),
        (
            {
                "callbackUrl": good.replace("127.0.0.1", "evil.test").replace(
                    "localhost", "evil.test"
                )
            },
            (400, "callback_host_not_allowed"),
        ),
        ({"callbackUrl": "not a url"}, (400, "invalid_callback_url")),
        ({"code": "abc#def"}, (400, "callback_url_required")),
        ({}, (400, "answer_required")),
        ({"code": "a", "callbackUrl": good}, (400, "answer_required")),
        ({"callbackUrl": "x" * 9000}, (422, "invalid_request")),
    ]:
        response = web.post(f"/api/auth/sessions/{sid}/code", json=body)
        assert error_of(response) == expected, body
        assert "forged" not in response.text and "code=" not in response.text
        now = web.get(f"/api/auth/sessions/{sid}").json()
        assert now["phase"] == "awaiting_user" and now["expects"] == "callbackUrl"

    assert harness.counts()["credentials"] == 0
    done = web.post(f"/api/auth/sessions/{sid}/code", json={"callbackUrl": good}).json()
    assert done["phase"] == "authenticated"
    again = web.post(f"/api/auth/sessions/{sid}/code", json={"callbackUrl": good})
    assert error_of(again) == (409, "session_ended")


def test_a_claude_code_from_another_sign_in_is_refused(harness: Controller) -> None:
    web = harness.client("service")
    session = start(web, provider="claude_code").json()
    answer = answer_for(session)
    assert answer is not None
    code = answer["code"].split("#")[0]

    refused = web.post(f"/api/auth/sessions/{session['id']}/code", json={"code": f"{code}#other"})
    assert error_of(refused) == (400, "invalid_code")
    assert code not in refused.text
    no_hash = web.post(f"/api/auth/sessions/{session['id']}/code", json={"code": code})
    assert error_of(no_hash) == (400, "invalid_code")
    assert web.post(f"/api/auth/sessions/{session['id']}/code", json=answer).json()["phase"] == (
        "authenticated"
    )


def test_device_logins_take_nothing_pasted(harness: Controller) -> None:
    web = harness.client("service")
    session = start(web, provider="codex", mode="device_code").json()

    response = web.post(f"/api/auth/sessions/{session['id']}/code", json={"code": "ABCD-1234"})

    assert error_of(response) == (409, "nothing_to_submit")
    assert session["expects"] is None and session["userCode"]


def test_a_login_the_cli_gives_up_on_ends_failed_with_nothing_stored(harness: Controller) -> None:
    """Gemini exits after a second refused code: the session fails, no credential, no VM."""
    web = harness.client("service")
    session = start(web, provider="gemini_cli").json()
    sid = session["id"]

    first = web.post(f"/api/auth/sessions/{sid}/code", json={"code": "wrong-1"}).json()
    assert (first["phase"], first["error"]["code"]) == ("awaiting_user", "code_rejected")
    assert first["loginUrl"] != session["loginUrl"]  # Gemini shows a new link after a refusal
    second = web.post(f"/api/auth/sessions/{sid}/code", json={"code": "wrong-2"}).json()
    final = harness.wait_phase(web, sid, {"failed"}) if not second["ended"] else second

    assert (final["phase"], final["error"]["code"]) == ("failed", "login_failed")
    assert "wrong-2" not in str(final)
    assert harness.counts()["credentials"] == 0
    assert harness.vm_row(session["vmId"]).state == VmState.STOPPED
    assert web.get("/api/users/u-1/credentials").json() == []


def test_credentials_routes_refuse_bad_input(harness: Controller) -> None:
    web = harness.client("service")
    alice = harness.client("user:alice")

    assert error_of(web.get("/api/users/ghost/credentials")) == (404, "unknown_user")
    assert error_of(alice.get("/api/users/bob/credentials")) == (403, "forbidden_user")
    assert error_of(alice.delete("/api/users/bob/credentials/codex")) == (403, "forbidden_user")
    assert error_of(alice.delete("/api/users/alice/credentials/cursor")) == (
        400,
        "unknown_provider",
    )
    assert error_of(alice.delete("/api/users/alice/credentials/codex")) == (404, "no_credentials")
    assert error_of(web.get("/api/users/has space/credentials")) == (422, "invalid_request")
