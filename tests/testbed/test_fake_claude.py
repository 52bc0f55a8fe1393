"""Fake ``claude``: login in a real PTY against the fake server, a prompt run, refresh rotation."""

from __future__ import annotations

import json
import os
from pathlib import Path

from remotecli.testbed import OAuthServer, login
from tests.testbed.clis import PASSWORD, USER, bin_path, pty_spawn, run_cli

CLAUDE = bin_path("claude")


def claude_login_in_pty(env: dict[str, str], cwd: Path) -> bytes:
    with pty_spawn([CLAUDE, "auth", "login"], env, cwd) as term:
        url = term.expect(r"visit:\n(\S+)\n").group(1)
        term.expect("Paste code here if prompted > ")
        term.send("no-hash-here\r")
        term.expect("That doesn't look like the full code. Copy all of it, including the # in")
        term.expect("Paste code here if prompted > ")
        term.send(login(url, USER, PASSWORD).pasted + "\r")
        term.expect("Signing in\u2026\n")
        term.expect("Login successful.\n")
        assert term.wait() == 0
        return term.raw


def test_login_prompt_run_and_refresh_rotation(
    server: OAuthServer, cli_env: dict[str, str], home: Path, workdir: Path
) -> None:
    raw = claude_login_in_pty(cli_env, workdir)
    # The short sign-in link inside an OSC 8 hyperlink, in bright blue, like the real one.
    assert f"\x1b]8;;{server.url}/claude/oauth/authorize?z-".encode() in raw
    assert b"\x1b[94m" in raw

    creds_file = home / ".claude" / ".credentials.json"
    assert creds_file.stat().st_mode & 0o777 == 0o600
    creds = json.loads(creds_file.read_text())["claudeAiOauth"]
    assert set(creds) >= {"accessToken", "refreshToken", "expiresAt", "scopes", "subscriptionType"}
    assert "user:inference" in creds["scopes"]
    assert json.loads((home / ".claude.json").read_text())["hasCompletedOnboarding"] is True

    status = run_cli([CLAUDE, "auth", "status", "--json"], cli_env)
    assert status.returncode == 0
    assert json.loads(status.stdout)["loggedIn"] is True

    argv = [CLAUDE, "-p", "please run a tool", "--output-format", "stream-json", "--verbose"]
    result = run_cli(argv, cli_env, cwd=workdir)
    assert (result.returncode, result.stderr) == (0, "")
    events = [json.loads(line) for line in result.stdout.splitlines()]
    kinds = [(e["type"], e.get("subtype")) for e in events]
    assert kinds == [
        ("system", "init"),
        ("assistant", None),  # tool_use
        ("user", None),  # tool_result
        ("assistant", None),
        ("assistant", None),
        ("result", "success"),
    ]
    assert events[1]["message"]["content"][0]["input"]["command"] == "echo hello"
    tool_result = events[2]["message"]["content"][0]
    assert (tool_result["type"], tool_result["content"]) == ("tool_result", "hello")
    texts = [e["message"]["content"][0]["text"] for e in events[3:5]]
    assert texts == ["You said: ", "please run a tool"]
    final = events[-1]
    assert final["is_error"] is False
    assert final["result"] == "You said: please run a tool"
    assert final["num_turns"] == 2
    assert {"session_id", "total_cost_usd", "usage", "duration_ms"} <= set(final)
    assert len({e["session_id"] for e in events}) == 1

    # Expiry: the next run refreshes, rotates the refresh token and rewrites the file.
    server.expire_access_tokens("claude")
    again = run_cli([CLAUDE, "-p", "hi", "--output-format", "stream-json", "--verbose"], cli_env)
    assert again.returncode == 0
    rotated = json.loads(creds_file.read_text())["claudeAiOauth"]
    assert rotated["refreshToken"] != creds["refreshToken"]
    assert rotated["accessToken"] != creds["accessToken"]
    assert creds_file.stat().st_mode & 0o777 == 0o600
    assert [t.via for t in server.issued_tokens("claude")] == [
        "authorization_code",
        "refresh_token",
    ]

    # A stale copy of the old file (another VM) makes the server revoke the chain.
    creds_file.write_text(json.dumps({"claudeAiOauth": {**creds, "expiresAt": 0}}))
    stale = run_cli([CLAUDE, "-p", "hi", "--output-format", "stream-json", "--verbose"], cli_env)
    assert stale.returncode == 1
    last = json.loads(stale.stdout.splitlines()[-1])
    assert last["is_error"] is True
    assert last["result"].startswith("Failed to authenticate: OAuth session expired")
    assert json.loads(stale.stdout.splitlines()[1])["error"] == "authentication_failed"


def test_full_sign_in_link_and_exchange_failure_with_pipes(
    server: OAuthServer, cli_env: dict[str, str]
) -> None:
    env = {**cli_env, "CLAUDE_CODE_FULL_SIGN_IN_LINK": "1"}
    result = run_cli([CLAUDE, "auth", "login"], env, stdin="not-a-real-code#whatever\n")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[:2] == ["Opening browser to sign in\u2026", "If the browser didn't open, visit:"]
    assert lines[2].startswith(f"{server.url}/claude/oauth/authorize?code=true&client_id=")
    assert "&state=" in lines[2]
    assert "\x1b" not in result.stdout  # no hyperlink or colour through pipes
    assert result.stdout.endswith("Paste code here if prompted > ")
    assert result.stderr == "Couldn't log in: Token exchange failed (400): Bad Request\n"


def test_not_logged_in_prompt_run_is_the_real_authentication_failure(
    cli_env: dict[str, str],
) -> None:
    argv = [CLAUDE, "-p", "hi", "--output-format", "stream-json", "--verbose"]
    result = run_cli(argv, cli_env)
    assert result.returncode == 1
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["type"] for e in events] == ["system", "assistant", "result"]
    assert events[1]["error"] == "authentication_failed"
    assert events[2]["result"] == "Not logged in \u00b7 Please run /login"
    assert events[2]["is_error"] is True


def test_fail_prompt_api_key_mode_and_cli_basics(cli_env: dict[str, str]) -> None:
    env = {**cli_env, "ANTHROPIC_API_KEY": "test-key"}
    argv = [CLAUDE, "-p", "fail: boom", "--output-format", "stream-json", "--verbose"]
    failed = run_cli(argv, env)
    assert failed.returncode == 1
    assert json.loads(failed.stdout.splitlines()[-1])["is_error"] is True
    assert "boom" in failed.stderr
    ok = run_cli([CLAUDE, "-p", "hello there"], env)
    assert (ok.returncode, ok.stdout) == (0, "You said: hello there\n")
    bad_key = run_cli([CLAUDE, "-p", "hi"], {**cli_env, "ANTHROPIC_API_KEY": "sk-nope"})
    assert (bad_key.returncode, bad_key.stdout) == (
        1,
        "Invalid API key \u00b7 Fix external API key\n",
    )
    assert run_cli([CLAUDE, "--version"], cli_env).stdout == "2.1.332 (Claude Code)\n"
    unknown = run_cli([CLAUDE, "--bogus"], cli_env)
    assert (unknown.returncode, unknown.stderr) == (1, "error: unknown option '--bogus'\n")
    assert "Usage: claude" in run_cli([CLAUDE, "--help"], cli_env).stdout
    no_url = {k: v for k, v in cli_env.items() if k != "REMOTECLI_TESTBED_URL"}
    missing = run_cli([CLAUDE, "-p", "hi"], no_url)
    assert missing.returncode == 2
    assert "REMOTECLI_TESTBED_URL" in missing.stderr


def test_hang_is_killed_by_sigterm(cli_env: dict[str, str]) -> None:
    import signal
    import subprocess

    env = {**cli_env, "ANTHROPIC_API_KEY": "test-key"}
    proc = subprocess.Popen(
        [CLAUDE, "-p", "hang", "--output-format", "stream-json", "--verbose"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        assert b'"subtype":"init"' in proc.stdout.readline()
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=10) == -signal.SIGTERM
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()
