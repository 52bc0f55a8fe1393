"""Every provider x login mode through the real agent, against the test bed.

The agent runs the fake CLIs in real PTYs; a "user" signs in at the test
bed's OAuth server with ``remotecli.testbed.browser``; what they would paste
goes back through the agent; the credential files must then hold the tokens
the server issued.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from remotecli.testbed import OAuthServer, approve_device, login
from tests.support import procfs
from tests.support.agent_harness import RunningAgent, port_is_listening, run_agent
from tests.support.agent_helpers import all_gone, error_of, start_login, wait_ended
from tests.support.user import PASSWORD, USER


def _credentials(agent: RunningAgent, provider: str) -> dict[str, Any]:
    body: dict[str, Any] = agent.client().get("/credentials", params={"provider": provider}).json()
    return body


def _issued_access_tokens(server: OAuthServer, provider: str) -> set[str]:
    return {t.access_token for t in server.issued_tokens(provider)}


def test_claude_paste_code_login(agent: RunningAgent, oauth_server: OAuthServer) -> None:
    session = start_login(agent, "claude_code")
    assert (session["phase"], session["mode"], session["awaitingCode"]) == (
        "awaiting_user", "paste_code", True,
    )  # fmt: skip
    assert session["oauthUrl"].startswith(oauth_server.url + "/claude/oauth/authorize?")
    pasted = login(session["oauthUrl"], USER, PASSWORD).pasted
    assert "#" in pasted
    done = agent.client().post(f"/sessions/{session['sessionId']}/code", json={"code": pasted})
    assert done.json()["phase"] == "authenticated", done.text
    creds = _credentials(agent, "claude_code")
    assert [f["path"] for f in creds["files"]] == [".claude/.credentials.json"]
    stored = json.loads(creds["files"][0]["content"])["claudeAiOauth"]
    assert stored["accessToken"] in _issued_access_tokens(oauth_server, "claude")
    assert (agent.home / ".claude/.credentials.json").stat().st_mode & 0o777 == 0o600
    status = agent.client().get("/credentials/status", params={"sessionId": session["sessionId"]})
    assert status.json() == {
        "sessionId": session["sessionId"], "provider": "claude_code", "phase": "authenticated",
        "authenticated": True, "error": None, "exitCode": 0,
    }  # fmt: skip


def test_codex_localhost_callback_login(agent: RunningAgent, oauth_server: OAuthServer) -> None:
    session = start_login(agent, "codex", "localhost_callback")
    assert session["callback"] == {"port": 1455, "path": "/auth/callback"}
    redirect = login(session["oauthUrl"], USER, PASSWORD).redirect_url
    assert redirect is not None
    done = agent.client().post(
        f"/sessions/{session['sessionId']}/code", json={"callbackUrl": redirect}
    )
    body = done.json()
    # Codex's listener answers a good callback with a redirect to its /success page.
    assert (body["phase"], body["relayStatus"]) == ("authenticated", 302), done.text
    auth = json.loads(_credentials(agent, "codex")["files"][0]["content"])
    assert auth["tokens"]["access_token"] in _issued_access_tokens(oauth_server, "codex")
    assert not port_is_listening(1455)


def test_codex_device_code_login(agent: RunningAgent, oauth_server: OAuthServer) -> None:
    session = start_login(agent, "codex", "device_code")
    assert session["userCode"], session
    assert session["awaitingCode"] is False
    refused = agent.client().post(f"/sessions/{session['sessionId']}/code", json={"code": "x"})
    assert error_of(refused) == (409, "nothing_to_submit")
    approve_device(session["oauthUrl"], session["userCode"], USER, PASSWORD)
    ended = wait_ended(agent, session["sessionId"])
    assert ended["phase"] == "authenticated", ended
    auth = json.loads(_credentials(agent, "codex")["files"][0]["content"])
    assert auth["tokens"]["access_token"] in _issued_access_tokens(oauth_server, "codex")


def test_gemini_paste_code_login_after_a_refused_code(
    agent: RunningAgent, oauth_server: OAuthServer
) -> None:
    session = start_login(agent, "gemini_cli")
    sid, first_url = session["sessionId"], session["oauthUrl"]
    refused = agent.client().post(f"/sessions/{sid}/code", json={"code": "not-a-real-code"})
    body = refused.json()
    assert (body["phase"], body["error"]["code"]) == ("awaiting_user", "code_rejected"), body
    assert body["oauthUrl"] != first_url  # the CLI made a new URL with a new state
    code = login(body["oauthUrl"], USER, PASSWORD).pasted
    done = agent.client().post(f"/sessions/{sid}/code", json={"code": code}).json()
    assert (done["phase"], done["error"]) == ("authenticated", None), done
    creds = _credentials(agent, "gemini_cli")
    assert creds["complete"] is True
    tokens = json.loads(creds["files"][0]["content"])
    assert tokens["access_token"] in _issued_access_tokens(oauth_server, "gemini")
    # Gemini does not exit after a login: the agent stops it.
    assert all_gone(procfs.descendants(agent.proc.pid))
    settings = json.loads((agent.home / ".gemini/settings.json").read_text())
    assert settings["security"]["auth"]["selectedType"] == "oauth-personal"


def test_claude_code_from_another_sign_in_is_never_typed(agent: RunningAgent) -> None:
    session = start_login(agent, "claude_code")
    sid = session["sessionId"]
    response = agent.client().post(f"/sessions/{sid}/code", json={"code": "abc#forged-state"})
    assert error_of(response) == (400, "invalid_code")
    response = agent.client().post(f"/sessions/{sid}/code", json={"code": "no-hash"})
    assert error_of(response) == (400, "invalid_code")
    assert agent.client().get(f"/sessions/{sid}").json()["phase"] == "awaiting_user"


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (lambda u: u.replace("127.0.0.1", "evil.test"), "callback_host_not_allowed"),
        (lambda u: u.replace("127.0.0.1", "10.0.0.1"), "callback_host_not_allowed"),
        (lambda u: u.replace("http://", "http://user:pw@"), "callback_host_not_allowed"),
        (lambda u: u.replace(":1455", ":1456"), "callback_port_mismatch"),
        (lambda u: u.replace("/auth/callback", "/cancel"), "callback_path_mismatch"),
        (lambda u: u.replace("state=", "state=x"), "state_mismatch"),
        (lambda u: u.replace("http://", "https://"), "invalid_callback_url"),
        (lambda u: "not a url", "invalid_callback_url"),
    ],
)
def test_codex_callback_relay_refuses_anything_but_the_pending_listener(
    agent: RunningAgent, oauth_server: OAuthServer, mutate: Any, code: str
) -> None:
    session = start_login(agent, "codex", "localhost_callback")
    redirect = login(session["oauthUrl"], USER, PASSWORD).redirect_url
    assert redirect is not None and redirect.startswith("http://127.0.0.1:1455/auth/callback?")
    sid = session["sessionId"]
    token_calls = len([r for r in oauth_server.request_log() if r[1].endswith("/token")])
    response = agent.client().post(f"/sessions/{sid}/code", json={"callbackUrl": mutate(redirect)})
    assert error_of(response) == (400, code)
    assert agent.client().get(f"/sessions/{sid}").json()["phase"] == "awaiting_user"
    # Nothing reached the CLI, so it exchanged nothing.
    assert len([r for r in oauth_server.request_log() if r[1].endswith("/token")]) == token_calls
    # The genuine URL still works afterwards.
    ok = agent.client().post(f"/sessions/{sid}/code", json={"callbackUrl": redirect}).json()
    assert ok["phase"] == "authenticated"


def test_cancel_kills_the_whole_group_and_frees_the_port(agent: RunningAgent) -> None:
    session = start_login(agent, "codex", "localhost_callback")
    children = procfs.descendants(agent.proc.pid)
    assert children and port_is_listening(1455)
    cancelled = agent.client().delete(f"/sessions/{session['sessionId']}").json()
    assert (cancelled["phase"], cancelled["error"]["code"]) == ("cancelled", "cancelled")
    assert all_gone(children)
    assert not port_is_listening(1455)
    again = agent.client().post(f"/sessions/{session['sessionId']}/code", json={"code": "x"})
    assert error_of(again) == (409, "login_ended")


def test_a_second_login_for_a_provider_supersedes_the_first(agent: RunningAgent) -> None:
    first = start_login(agent, "codex", "localhost_callback")
    second = start_login(agent, "codex", "localhost_callback")
    old = agent.client().get(f"/sessions/{first['sessionId']}").json()
    assert (old["phase"], old["error"]["code"]) == ("cancelled", "cancelled")
    assert "superseded" in old["error"]["message"]
    assert second["callback"] == {"port": 1455, "path": "/auth/callback"}
    assert agent.client().get("/health").json()["activeSessions"] == 1


def test_deadline_expires_the_login_and_leaves_nothing(
    tmp_path: Path, oauth_server: OAuthServer
) -> None:
    from remotecli.testbed import TESTBED_URL_ENV, fake_cli_bin_dir

    with run_agent(
        tmp_path,
        cli_path=fake_cli_bin_dir(),
        env={TESTBED_URL_ENV: oauth_server.url},
        extra_args=("--login-deadline", "1.5"),
    ) as agent:
        session = start_login(agent, "gemini_cli")  # Gemini ignores SIGTERM: the hard case
        children = procfs.descendants(agent.proc.pid)
        ended = wait_ended(agent, session["sessionId"])
        assert (ended["phase"], ended["error"]["code"]) == ("expired", "login_expired")
        assert all_gone(children)
        assert agent.client().get("/health").json()["activeSessions"] == 0


def test_logs_never_contain_urls_codes_or_tokens(
    agent: RunningAgent, oauth_server: OAuthServer
) -> None:
    session = start_login(agent, "claude_code")
    pasted = login(session["oauthUrl"], USER, PASSWORD).pasted
    agent.client().post(f"/sessions/{session['sessionId']}/code", json={"code": pasted})
    log = agent.log_path.read_text()
    stored = _credentials(agent, "claude_code")["files"][0]["content"]
    secrets = [pasted, pasted.split("#")[0], agent.token, oauth_server.url + "/claude"]
    secrets += list(json.loads(stored)["claudeAiOauth"].values())[:2]
    for secret in secrets:
        assert secret not in log
