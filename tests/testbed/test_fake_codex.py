"""Fake ``codex``: browser login via the loopback listener, device login, exec JSONL, refresh."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from remotecli.testbed import OAuthServer, approve_device, login
from remotecli.testbed.tokens import jwt_payload
from tests.testbed.clis import PASSWORD, USER, bin_path, run_cli, spawn

CODEX = bin_path("codex")
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

pytestmark = pytest.mark.usefixtures("codex_ports_free")


def get(url: str) -> tuple[int, str]:
    """GET without following redirects (what the agent's relay sees)."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), NoRedirect())
    try:
        with opener.open(url, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        body = exc.read().decode()
        exc.close()
        return exc.code, body


def exec_events(
    env: dict[str, str], prompt: str, cwd: Path
) -> tuple[int, list[dict[str, Any]], str]:
    argv = [CODEX, "exec", "--json", "--skip-git-repo-check", prompt]
    result = run_cli(argv, env, cwd=cwd)
    return result.returncode, [json.loads(x) for x in result.stdout.splitlines()], result.stderr


def test_browser_login_exec_and_refresh_rotation(
    server: OAuthServer, cli_env: dict[str, str], home: Path, workdir: Path
) -> None:
    with spawn([CODEX, "login"], cli_env) as cli:
        seen = cli.read_until(r"^http", stream="stderr")
        assert seen.startswith(
            "Starting local login server on http://localhost:1455.\n"
            "If your browser did not open, navigate to this URL to authenticate:\n\n"
        )
        url = seen.splitlines()[-1]
        query = parse_qs(urlsplit(url).query)
        assert url.startswith(f"{server.url}/codex/oauth/authorize?response_type=code&")
        assert query["redirect_uri"] == ["http://127.0.0.1:1455/auth/callback"]
        assert query["code_challenge_method"] == ["S256"]
        outcome = login(url, USER, PASSWORD)
        assert outcome.redirect_url is not None
        callback = outcome.redirect_url
        assert callback.startswith("http://127.0.0.1:1455/auth/callback?code=")
        # A wrong state is refused and the CLI keeps waiting.
        wrong = callback.replace("state=", "state=x")
        assert get(wrong) == (400, "State mismatch")
        assert get(callback)[0] == 302  # exchanged, redirected to /success
        # Like the real CLI it waits for the browser to follow the redirect.
        assert get("http://127.0.0.1:1455/success")[0] == 200
        rest = cli.rest()
        assert cli.proc.wait(timeout=10) == 0
        assert rest.endswith("Successfully logged in\n")

    auth_file = home / ".codex" / "auth.json"
    assert auth_file.stat().st_mode & 0o777 == 0o600
    auth = json.loads(auth_file.read_text())
    assert set(auth) == {"auth_mode", "OPENAI_API_KEY", "tokens", "last_refresh"}
    assert set(auth["tokens"]) == {"id_token", "access_token", "refresh_token", "account_id"}
    claims = jwt_payload(auth["tokens"]["id_token"])["https://api.openai.com/auth"]
    assert auth["tokens"]["account_id"] == claims["chatgpt_account_id"]
    status = run_cli([CODEX, "login", "status"], cli_env)
    assert (status.returncode, status.stderr) == (0, "Logged in using ChatGPT\n")

    code, events, stderr = exec_events(cli_env, "please run a tool", workdir)
    assert code == 0, stderr
    kinds = [(e["type"], e.get("item", {}).get("type")) for e in events]
    assert kinds == [
        ("thread.started", None),
        ("turn.started", None),
        ("item.completed", "reasoning"),
        ("item.started", "command_execution"),
        ("item.completed", "command_execution"),
        ("item.started", "agent_message"),
        ("item.updated", "agent_message"),
        ("item.completed", "agent_message"),
        ("turn.completed", None),
    ]
    assert events[4]["item"] == {
        **events[3]["item"],
        "aggregated_output": "hello\n",
        "exit_code": 0,
        "status": "completed",
    }
    assert events[7]["item"]["text"] == "You said: please run a tool"
    assert set(events[8]["usage"]) == {"input_tokens", "cached_input_tokens", "output_tokens"}

    server.expire_access_tokens("codex")
    code, _, _ = exec_events(cli_env, "hi", workdir)
    assert code == 0
    rotated = json.loads(auth_file.read_text())
    assert rotated["tokens"]["refresh_token"] != auth["tokens"]["refresh_token"]
    assert rotated["last_refresh"] != auth["last_refresh"]

    # The stale file (a second holder) reuses the spent token: the real codex message.
    auth_file.write_text(json.dumps(auth))
    server.expire_access_tokens("codex")
    code, events, stderr = exec_events(cli_env, "hi", workdir)
    reused = (
        "Your access token could not be refreshed because your refresh token was already "
        "used. Please log out and sign in again."
    )
    assert code == 1
    assert events[-2:] == [
        {"type": "error", "message": reused},
        {"type": "turn.failed", "error": {"message": reused}},
    ]
    assert reused in stderr


def test_stale_listener_is_cancelled_and_busy_port_falls_back(
    server: OAuthServer, cli_env: dict[str, str]
) -> None:
    with spawn([CODEX, "login"], cli_env) as first:
        first.read_until(r"^http", stream="stderr")
        with spawn([CODEX, "login"], cli_env) as second:
            seen = second.read_until(r"^http", stream="stderr")
            assert "http://localhost:1455." in seen  # took the port over
            assert first.proc.wait(timeout=10) == 1
            assert first.rest().endswith("Error logging in: Login cancelled\n")
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT from above
        squatter.bind(("127.0.0.1", 1455))
        squatter.listen()
        with spawn([CODEX, "login"], cli_env) as cli:
            seen = cli.read_until(r"^http", stream="stderr")
            assert "Starting local login server on http://localhost:1457." in seen
            assert "redirect_uri=http%3A%2F%2F127.0.0.1%3A1457%2Fauth%2Fcallback" in seen


def test_exchange_failure_is_reported_like_the_real_one(
    server: OAuthServer, cli_env: dict[str, str]
) -> None:
    with spawn([CODEX, "login"], cli_env) as cli:
        url = cli.read_until(r"^http", stream="stderr").splitlines()[-1]
        state = parse_qs(urlsplit(url).query)["state"][0]
        status, page = get(f"http://127.0.0.1:1455/auth/callback?code=bogus&state={state}")
        assert status == 200
        assert "Token exchange failed" in page
        assert cli.proc.wait(timeout=10) == 1
        assert cli.rest() == (
            "\nOn a remote or headless machine? Use `codex login --device-auth` instead.\n"
            "Token exchange error: token endpoint returned status 400 Bad Request\n"
            "Error logging in: Token exchange failed: token endpoint returned status 400 "
            "Bad Request\n"
        )


def test_device_login(server: OAuthServer, cli_env: dict[str, str], home: Path) -> None:
    with spawn([CODEX, "login", "--device-auth"], cli_env) as cli:
        seen = cli.read_until(r"cancel\.$", stream="stderr")
        assert "Follow these steps to sign in with ChatGPT using device code authorization:" in seen
        lines = [line.strip() for line in seen.splitlines()]
        verification = lines[
            lines.index("1. Open this link in your browser and sign in to your account") + 1
        ]
        user_code = lines[lines.index("2. Enter this one-time code (expires in 15 minutes)") + 1]
        assert verification == f"{server.url}/codex/device"
        approve_device(verification, user_code, USER, PASSWORD)
        assert cli.proc.wait(timeout=10) == 0
        assert cli.rest().endswith("Successfully logged in\n")
    assert json.loads((home / ".codex" / "auth.json").read_text())["auth_mode"] == "chatgpt"


def test_api_key_mode_fail_and_basics(cli_env: dict[str, str], home: Path, workdir: Path) -> None:
    result = run_cli([CODEX, "login", "--with-api-key"], cli_env, stdin="test-key-123456789\n")
    assert (result.returncode, result.stderr) == (
        0,
        "Reading API key from stdin...\nSuccessfully logged in\n",
    )
    status = run_cli([CODEX, "login", "status"], cli_env)
    assert status.stderr == "Logged in using an API key - test-key***56789\n"
    code, events, stderr = exec_events(cli_env, "fail: overloaded", workdir)
    assert code == 1
    assert events[-1] == {
        "type": "turn.failed",
        "error": {"message": "unexpected status 500 Internal Server Error: overloaded"},
    }
    assert "overloaded" in stderr
    bad = {**cli_env, "CODEX_API_KEY": "sk-wrong-key"}
    code, events, _ = exec_events(bad, "hi", workdir)
    assert code == 1
    assert "Incorrect API key provided" in str(events[-1])
    assert run_cli([CODEX, "--version"], cli_env).stdout == "codex-cli 0.171.0\n"
    unknown = run_cli([CODEX, "--bogus"], cli_env)
    assert unknown.returncode == 2
    assert unknown.stderr.startswith("error: unexpected argument '--bogus' found")
    in_repo = run_cli([CODEX, "exec", "--json", "hi"], cli_env, cwd=workdir)
    assert in_repo.returncode == 1
    assert "--skip-git-repo-check was not specified" in in_repo.stderr
    assert not (home / ".codex" / "log").exists()  # nothing but auth.json under CODEX_HOME
