"""Fake ``gemini``: NO_BROWSER login in a real PTY, folder trust, -p stream-json, refresh."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from remotecli.testbed import OAuthServer, login
from tests.testbed.clis import PASSWORD, USER, bin_path, pty_spawn, run_cli

GEMINI = bin_path("gemini")
URL_PROMPT = r"Please visit the following URL to authorize the application:\n\n(\S+)\n\n"


@pytest.fixture
def gemini_env(cli_env: dict[str, str], home: Path) -> dict[str, str]:
    (home / ".gemini").mkdir()
    settings = {"security": {"auth": {"selectedType": "oauth-personal"}}}
    (home / ".gemini" / "settings.json").write_text(json.dumps(settings))
    return {**cli_env, "NO_BROWSER": "true"}


def test_login_with_retry_trust_prompt_run_and_refresh(
    server: OAuthServer, gemini_env: dict[str, str], home: Path, workdir: Path
) -> None:
    with pty_spawn([GEMINI], gemini_env, workdir) as term:
        first_url = term.expect(URL_PROMPT).group(1)
        term.expect("Enter the authorization code: ")
        assert b"\x1b[?1049h" in term.raw  # the alternate screen, like the real one
        term.send("wrong-code\r")
        term.expect("Failed to authenticate with authorization code:invalid_grant")
        term.expect("Failed to authenticate with user code. Retrying...")
        second_url = term.expect(URL_PROMPT).group(1)
        assert second_url != first_url  # a new state and challenge on every attempt
        term.expect("Enter the authorization code: ")
        term.send(login(second_url, USER, PASSWORD).pasted + "\r")
        term.expect("Do you trust the files in this folder?")
        term.expect(r"1\. Trust folder \(work\)")
        term.send("1\r")
        term.expect(f"Logged in with Google: {USER}")
        term.send("/quit\r")
        assert term.wait() == 0

    creds_file = home / ".gemini" / "oauth_creds.json"
    creds = json.loads(creds_file.read_text())
    assert set(creds) == {
        "access_token",
        "refresh_token",
        "scope",
        "token_type",
        "id_token",
        "expiry_date",
    }
    assert creds_file.stat().st_mode & 0o777 == 0o600
    accounts = json.loads((home / ".gemini" / "google_accounts.json").read_text())
    assert accounts == {"active": USER, "old": []}
    trusted = json.loads((home / ".gemini" / "trustedFolders.json").read_text())
    assert trusted == {str(workdir.resolve()): "TRUST_FOLDER"}

    argv = [GEMINI, "-p", "run a tool please", "-o", "stream-json"]
    result = run_cli(argv, gemini_env, cwd=workdir)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["type"] for e in events] == [
        "init",
        "message",
        "tool_use",
        "tool_result",
        "message",
        "message",
        "result",
    ]
    assert events[1] == {**events[1], "role": "user", "content": "run a tool please"}
    assert events[2]["parameters"]["command"] == "echo hello"
    assert (events[3]["status"], events[3]["output"]) == ("success", "hello")
    assert [(e["role"], e["content"], e["delta"]) for e in events[4:6]] == [
        ("assistant", "You said: ", True),
        ("assistant", "run a tool please", True),
    ]
    assert events[-1]["status"] == "success"
    assert events[-1]["stats"]["tool_calls"] == 1

    # Expiry: Google refreshes without rotating; the file gets a new access token only.
    server.expire_access_tokens("gemini")
    again = run_cli([GEMINI, "-p", "hi", "-o", "stream-json"], gemini_env, cwd=workdir)
    assert again.returncode == 0
    refreshed = json.loads(creds_file.read_text())
    assert refreshed["refresh_token"] == creds["refresh_token"]
    assert refreshed["access_token"] != creds["access_token"]

    server.revoke_all("gemini")
    server.expire_access_tokens("gemini")
    revoked = run_cli([GEMINI, "-p", "hi", "-o", "stream-json"], gemini_env, cwd=workdir)
    assert revoked.returncode == 41
    assert "invalid_grant" in revoked.stderr


def test_second_failure_exits_41(gemini_env: dict[str, str], workdir: Path) -> None:
    with pty_spawn([GEMINI], gemini_env, workdir) as term:
        for _ in range(2):
            term.expect(URL_PROMPT)
            term.expect("Enter the authorization code: ")
            term.send("\r")
            term.expect("Authorization code is required.")
        assert term.wait() == 41
        assert b"\x1b[?1049l" in term.raw
        assert "exitCode: 41" in term.text
        assert "\x1b[31mFailed to authenticate with user code.\x1b[0m" in term.raw.decode()


def test_ignores_sigterm(gemini_env: dict[str, str], workdir: Path) -> None:
    with pty_spawn([GEMINI], gemini_env, workdir) as term:
        term.expect("Enter the authorization code: ")
        term.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert term.proc.poll() is None
        term.proc.kill()
        assert term.proc.wait(timeout=5) == -signal.SIGKILL


def test_headless_refusals_have_the_real_exit_codes(
    gemini_env: dict[str, str], cli_env: dict[str, str], workdir: Path
) -> None:
    no_creds = run_cli([GEMINI, "-p", "hi", "-o", "stream-json"], gemini_env, cwd=workdir)
    assert (no_creds.returncode, no_creds.stdout) == (41, "")
    assert "Manual authorization is required but the current session is non-interactive" in (
        no_creds.stderr
    )
    no_tty = run_cli([GEMINI], gemini_env, cwd=workdir, stdin="hello\n")
    assert no_tty.returncode == 41  # refuses to log in without a terminal
    fresh_home = {**cli_env, "HOME": str(workdir)}  # no ~/.gemini/settings.json there
    no_auth = run_cli([GEMINI, "-p", "hi"], fresh_home, cwd=workdir)
    assert no_auth.returncode == 41
    assert no_auth.stderr.startswith("Please set an Auth method in your ")

    key_env = {**gemini_env, "GEMINI_API_KEY": "test-key"}
    untrusted = run_cli([GEMINI, "-p", "hi", "-o", "stream-json"], key_env, cwd=workdir)
    assert untrusted.returncode == 55
    assert "Gemini CLI is not running in a trusted directory." in untrusted.stderr
    skip = run_cli([GEMINI, "-p", "fail: quota", "-o", "stream-json", "--skip-trust"], key_env)
    assert skip.returncode == 1
    events = [json.loads(line) for line in skip.stdout.splitlines()]
    assert [e["type"] for e in events] == ["init", "message", "error", "result"]
    assert events[-1]["status"] == "error"
    assert "quota" in skip.stderr
    trusted_env = {**key_env, "GEMINI_CLI_TRUST_WORKSPACE": "true"}
    text = run_cli([GEMINI, "-p", "hi"], trusted_env, cwd=workdir)
    assert (text.returncode, text.stdout) == (0, "You said: hi\n")
    assert run_cli([GEMINI, "--version"], cli_env).stdout == "0.61.0\n"
    unknown = run_cli([GEMINI, "--bogus"], cli_env)
    assert unknown.returncode == 1
    assert unknown.stderr.endswith("Unknown argument: bogus\n")
