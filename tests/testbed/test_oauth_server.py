"""The fake authorization server: PKCE, codes, redirects, rotation, reuse detection, devices."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from remotecli.testbed import BrowserError, OAuthServer, approve_device, login
from remotecli.testbed.clients import CLAUDE_LOGIN_SCOPES, CLIENTS, encode_claude_short_link
from remotecli.testbed.tokens import jwt_payload, pkce_challenge, pkce_verifier
from tests.testbed.clis import PASSWORD, USER

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def call(
    url: str, data: dict[str, str] | None = None, as_json: bool = False, bearer: str = ""
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    body = None
    if data is not None:
        body = json.dumps(data).encode() if as_json else urlencode(data).encode()
        headers["Content-Type"] = (
            "application/json" if as_json else "application/x-www-form-urlencoded"
        )
    request = urllib.request.Request(url, data=body, headers=headers)
    try:
        with _OPENER.open(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        payload = exc.read()
        exc.close()
        return exc.code, json.loads(payload)


def authorize_url(server: OAuthServer, provider: str, verifier: str, state: str = "st") -> str:
    spec = CLIENTS[provider]
    return f"{server.url}/{provider}/oauth/authorize?" + urlencode(
        {
            "response_type": "code",
            "client_id": spec.client_id,
            "redirect_uri": spec.redirect_uris(server.url)[-1],
            "code_challenge": pkce_challenge(verifier),
            "code_challenge_method": "S256",
            "state": state,
        }
    )


def code_for(server: OAuthServer, provider: str, verifier: str) -> str:
    outcome = login(authorize_url(server, provider, verifier), USER, PASSWORD)
    if outcome.code is not None:
        return outcome.code.split("#")[0]
    assert outcome.redirect_url is not None
    return parse_qs(urlsplit(outcome.redirect_url).query)["code"][0]


def exchange(server: OAuthServer, provider: str, code: str, verifier: str, **extra: str) -> Any:
    spec = CLIENTS[provider]
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "code_verifier": verifier,
        "redirect_uri": spec.redirect_uris(server.url)[-1],
        "client_id": spec.client_id,
        **extra,
    }
    return call(f"{server.url}/{provider}/oauth/token", form, as_json=provider == "claude")


def refresh(server: OAuthServer, provider: str, token: str) -> tuple[int, Any]:
    form = {"grant_type": "refresh_token", "refresh_token": token}
    return call(f"{server.url}/{provider}/oauth/token", form)


def logged_in(server: OAuthServer, provider: str) -> dict[str, Any]:
    verifier = pkce_verifier()
    status, body = exchange(server, provider, code_for(server, provider, verifier), verifier)
    assert status == 200, body
    assert isinstance(body, dict)
    return body


@pytest.mark.parametrize("provider", ["claude", "codex", "gemini"])
def test_pkce_login_issues_tokens_in_the_provider_shape(server: OAuthServer, provider: str) -> None:
    body = logged_in(server, provider)
    assert {"access_token", "refresh_token", "expires_in", "token_type", "scope"} <= set(body)
    assert body["expires_in"] == 3600
    assert ("id_token" in body) == (provider != "claude")
    status, info = call(f"{server.url}/{provider}/userinfo", bearer=body["access_token"])
    assert (status, info["email"]) == (200, USER)


def test_codex_id_token_carries_the_chatgpt_account(server: OAuthServer) -> None:
    claims = jwt_payload(logged_in(server, "codex")["id_token"])
    auth = claims["https://api.openai.com/auth"]
    assert claims["email"] == USER
    assert set(auth) >= {"chatgpt_account_id", "chatgpt_plan_type"}
    assert claims["exp"] > claims["iat"]


def test_wrong_verifier_is_refused(server: OAuthServer) -> None:
    verifier = pkce_verifier()
    status, body = exchange(server, "codex", code_for(server, "codex", verifier), pkce_verifier())
    assert (status, body["error"]) == (400, "invalid_grant")


def test_code_is_single_use_and_replay_revokes_the_chain(server: OAuthServer) -> None:
    verifier = pkce_verifier()
    code = code_for(server, "claude", verifier)
    status, first = exchange(server, "claude", code, verifier)
    assert status == 200
    status, again = exchange(server, "claude", code, verifier)
    assert (status, again["error"]) == (400, "invalid_grant")
    status, _ = call(f"{server.url}/claude/userinfo", bearer=first["access_token"])
    assert status == 401


def test_redirect_uri_must_match_the_authorization(server: OAuthServer) -> None:
    verifier = pkce_verifier()
    code = code_for(server, "codex", verifier)
    status, body = exchange(
        server, "codex", code, verifier, redirect_uri="http://localhost:1455/auth/callback"
    )
    assert (status, body["error"]) == (400, "invalid_grant")


def test_unregistered_redirect_uri_gets_a_400_page(server: OAuthServer) -> None:
    url = authorize_url(server, "codex", pkce_verifier()).replace("1457", "9999")
    with pytest.raises(BrowserError) as info:
        login(url, USER, PASSWORD)
    assert info.value.status == 400
    assert "redirect_uri is not registered" in str(info.value)


def test_wrong_password_shows_the_form_again(server: OAuthServer) -> None:
    with pytest.raises(BrowserError) as info:
        login(authorize_url(server, "gemini", pkce_verifier()), USER, "wrong")
    assert (info.value.status, str(info.value)) == (401, "Wrong email or password.")


def test_claude_short_link_expands_and_shows_code_hash_state(server: OAuthServer) -> None:
    verifier = pkce_verifier()
    query = encode_claude_short_link(0, list(CLAUDE_LOGIN_SCOPES), pkce_challenge(verifier))
    assert query.startswith("z-")  # what claude 2.1.332 prints for its login scopes
    outcome = login(f"{server.url}/claude/oauth/authorize?{query}", USER, PASSWORD)
    assert outcome.code is not None
    code, state = outcome.code.split("#")
    assert state
    status, _ = exchange(server, "claude", code, verifier)
    assert status == 200


@pytest.mark.parametrize("provider", ["claude", "codex"])
def test_refresh_rotates_and_reuse_revokes_the_whole_chain(
    server: OAuthServer, provider: str
) -> None:
    first = logged_in(server, provider)
    status, second = refresh(server, provider, first["refresh_token"])
    assert status == 200
    assert second["refresh_token"] != first["refresh_token"]
    status, third = refresh(server, provider, second["refresh_token"])
    assert status == 200
    status, reused = refresh(server, provider, first["refresh_token"])  # a stale copy
    if provider == "codex":
        assert (status, reused["error"]["code"]) == (401, "refresh_token_reused")
    else:
        assert (status, reused["error"]) == (400, "invalid_grant")
    # Every token of that login is dead now, even the newest.
    status, again = refresh(server, provider, third["refresh_token"])
    assert status in (400, 401)
    if provider == "codex":
        assert again["error"]["code"] == "refresh_token_invalidated"
    status, _ = call(f"{server.url}/{provider}/userinfo", bearer=third["access_token"])
    assert status == 401
    assert all(t.revoked for t in server.issued_tokens(provider))


def test_gemini_does_not_rotate(server: OAuthServer) -> None:
    first = logged_in(server, "gemini")
    for _ in range(2):
        status, body = refresh(server, "gemini", first["refresh_token"])
        assert (status, body["refresh_token"]) == (200, first["refresh_token"])
        assert body["access_token"] != first["access_token"]


def test_expired_access_token_is_refused_then_refresh_works(server: OAuthServer) -> None:
    body = logged_in(server, "claude")
    assert server.expire_access_tokens("claude") == 1
    status, info = call(f"{server.url}/claude/userinfo", bearer=body["access_token"])
    assert (status, info["error"]) == (401, "invalid_token")
    status, new = refresh(server, "claude", body["refresh_token"])
    assert status == 200
    assert call(f"{server.url}/claude/userinfo", bearer=new["access_token"])[0] == 200


def test_codex_refresh_errors_carry_openai_codes(server: OAuthServer) -> None:
    body = logged_in(server, "codex")
    server.expire_refresh_tokens("codex")
    status, expired = refresh(server, "codex", body["refresh_token"])
    assert (status, expired["error"]["code"]) == (401, "refresh_token_expired")
    server.revoke_all("codex")
    status, revoked = refresh(server, "codex", body["refresh_token"])
    assert (status, revoked["error"]["code"]) == (401, "refresh_token_invalidated")


def test_a_new_codex_login_revokes_the_previous_chain(server: OAuthServer) -> None:
    old = logged_in(server, "codex")
    logged_in(server, "codex")
    status, body = refresh(server, "codex", old["refresh_token"])
    assert (status, body["error"]["code"]) == (401, "refresh_token_invalidated")


def test_device_flow_pending_then_approved(server: OAuthServer) -> None:
    spec = CLIENTS["codex"]
    status, start = call(f"{server.url}/codex/oauth/device/code", {"client_id": spec.client_id})
    assert status == 200
    assert start["verification_uri"] == f"{server.url}/codex/device"
    assert start["expires_in"] == 900
    poll = {
        "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
        "device_code": start["device_code"],
        "client_id": spec.client_id,
    }
    token_url = f"{server.url}/codex/oauth/token"
    assert call(token_url, poll)[1]["error"] == "authorization_pending"
    assert call(token_url, poll)[1]["error"] == "slow_down"  # polled faster than `interval`
    approve_device(start["verification_uri"], start["user_code"], USER, PASSWORD)
    status, tokens = call(token_url, poll)
    assert status == 200
    assert call(f"{server.url}/codex/userinfo", bearer=tokens["access_token"])[0] == 200
    assert call(token_url, poll)[1]["error"] == "invalid_grant"  # consumed


def test_device_flow_denied_and_expired(server: OAuthServer) -> None:
    spec = CLIENTS["gemini"]
    token_url = f"{server.url}/gemini/oauth/token"
    grant = "urn:ietf:params:oauth:grant-type:device_code"
    _, denied = call(f"{server.url}/gemini/oauth/device/code", {"client_id": spec.client_id})
    approve_device(denied["verification_uri"], denied["user_code"], USER, PASSWORD, deny=True)
    poll = {"grant_type": grant, "device_code": denied["device_code"]}
    assert call(token_url, poll)[1]["error"] == "access_denied"
    _, late = call(f"{server.url}/gemini/oauth/device/code", {"client_id": spec.client_id})
    server.expire_device_codes()
    poll = {"grant_type": grant, "device_code": late["device_code"]}
    assert call(token_url, poll)[1]["error"] == "expired_token"


def test_healthz_and_stop_is_idempotent() -> None:
    server = OAuthServer().start()
    url = server.url
    assert call(f"{url}/healthz")[1]["status"] == "ok"
    server.stop()
    server.stop()
    with pytest.raises(OSError):
        _OPENER.open(f"{url}/healthz", timeout=2)


def test_demo_entry_point_prints_its_url_and_stops_on_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "remotecli.testbed", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("OFFLINE DEMO / TEST BED: fake OAuth server at http://127.0.0.1:")
        url = line.split(" at ")[1].split()[0]
        assert call(f"{url}/healthz")[0] == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=5)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
