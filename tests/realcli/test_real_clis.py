"""The agent against the REAL pinned CLIs from npm (offline: no provider is reachable).

What can be shown without the providers: the agent captures each real
login URL, a callback relayed to the real Codex listener on 1455 reaches
it, a wrong state never does, and the token exchange that then fails (no
internet) is reported plainly and fast instead of hanging. Skipped, saying
why, when the npm registry does not answer.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from remotecli.providers import PROVIDERS
from tests.support.agent_harness import RunningAgent, port_is_listening, run_agent
from tests.support.agent_helpers import start_login, wait_ended
from tests.support.realcli_install import PINNED_PACKAGES, install_real_clis, npm_registry_reachable

pytestmark = [pytest.mark.realcli, pytest.mark.timeout(900)]


def test_the_installer_pins_what_the_providers_pin() -> None:
    assert sorted(PINNED_PACKAGES) == sorted(
        f"{p.npm_package}@{p.npm_version}" for p in PROVIDERS.values()
    )


@pytest.fixture(scope="session")
def real_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        bins = install_real_clis(timeout=900)
    except RuntimeError as exc:
        if npm_registry_reachable(timeout=15):
            raise  # the registry answers, so a failed install is a real failure
        pytest.skip(f"the npm registry does not answer and the CLIs are not cached: {exc}")
    directory = tmp_path_factory.mktemp("real-bin")
    for name, path in bins.items():
        (directory / name).symlink_to(path)
    return directory


@pytest.fixture
def real_agent(tmp_path: Path, real_bin: Path) -> Iterator[RunningAgent]:
    with run_agent(tmp_path, cli_path=real_bin, env={"PATH": os.environ["PATH"]}) as agent:
        yield agent


def _assert_no_login_left(agent: RunningAgent) -> None:
    for session in agent.client().get("/sessions").json()["sessions"]:
        assert session["phase"] in ("failed", "cancelled", "expired", "authenticated")
    assert agent.client().get("/health").json()["activeSessions"] == 0


def test_codex_real_url_callback_relay_and_plain_offline_failure(real_agent: RunningAgent) -> None:
    session = start_login(real_agent, "codex", "localhost_callback")
    url = str(session["oauthUrl"])
    assert (urlsplit(url).hostname, urlsplit(url).path) == ("auth.openai.com", "/oauth/authorize")
    assert session["callback"] == {"port": 1455, "path": "/auth/callback"}
    assert port_is_listening(1455)
    state = url.split("state=")[1].split("&")[0]
    client = real_agent.client()
    sid = session["sessionId"]

    callback = "http://localhost:1455/auth/callback?code=abc&state="
    wrong = client.post(f"/sessions/{sid}/code", json={"callbackUrl": callback + "not-the-state"})
    assert (wrong.status_code, wrong.json()["code"]) == (400, "state_mismatch")

    right = client.post(f"/sessions/{sid}/code", json={"callbackUrl": callback + state})
    assert right.status_code == 200, right.text
    body = right.json()
    # The real listener answered (200 + its error page) and then the CLI gave up.
    assert body["relayStatus"] == 200
    ended = body if body["phase"] == "failed" else wait_ended(real_agent, str(sid))
    assert ended["phase"] == "failed"
    error = ended["error"]
    assert isinstance(error, dict)
    assert error["code"] == "login_failed"
    assert "Token exchange failed" in error["message"]
    # The CLI gave up by itself (it exited, non-zero), not the agent's login deadline
    # (which ends a login "expired", code login_expired, with no exit code).
    assert ended["exitCode"] not in (None, 0), ended
    assert not port_is_listening(1455)
    _assert_no_login_left(real_agent)


def test_claude_real_url_with_state_and_plain_offline_failure(real_agent: RunningAgent) -> None:
    session = start_login(real_agent, "claude_code")
    url = str(session["oauthUrl"])
    assert (urlsplit(url).hostname, urlsplit(url).path) == ("claude.com", "/cai/oauth/authorize")
    state = url.split("state=")[1].split("&")[0]
    sid = session["sessionId"]
    client = real_agent.client(timeout=60)
    refused = client.post(f"/sessions/{sid}/code", json={"code": "abc#other-state"})
    assert (refused.status_code, refused.json()["code"]) == (400, "invalid_code")
    body = client.post(f"/sessions/{sid}/code", json={"code": f"abc#{state}", "waitSeconds": 25})
    ended = body.json() if body.json()["phase"] == "failed" else wait_ended(real_agent, str(sid))
    assert ended["phase"] == "failed"
    error = ended["error"]
    assert isinstance(error, dict)
    assert "Couldn't log in" in error["message"]
    _assert_no_login_left(real_agent)


def test_gemini_real_url_and_a_refused_code_shows_the_new_url(real_agent: RunningAgent) -> None:
    session = start_login(real_agent, "gemini_cli")
    first = str(session["oauthUrl"])
    assert urlsplit(first).hostname == "accounts.google.com"
    sid = session["sessionId"]
    client = real_agent.client(timeout=60)
    answer = client.post(f"/sessions/{sid}/code", json={"code": "wrongcode1", "waitSeconds": 25})
    body = answer.json()
    # Offline the exchange fails; the CLI asks again with a new URL and state.
    assert body["phase"] == "awaiting_user", body
    assert body["error"]["code"] == "code_rejected"
    assert "Failed to authenticate" in body["error"]["message"]
    assert body["oauthUrl"] != first
    cancelled = client.delete(f"/sessions/{sid}").json()
    assert cancelled["phase"] == "cancelled"
    _assert_no_login_left(real_agent)


def test_the_real_clis_report_their_versions(real_bin: Path) -> None:
    import subprocess

    for provider in PROVIDERS.values():
        out = subprocess.run(
            [str(real_bin / provider.executable), "--version"],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout  # fmt: skip
        assert provider.npm_version in out
