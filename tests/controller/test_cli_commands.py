"""The `remotecli` commands against a running controller, as a user types them.

The controller runs in offline-demo mode on the fake backend (the test bed
is the provider); each command is a real subprocess of the installed CLI.
"""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from remotecli.controller.settings import Settings
from remotecli.testbed import login
from tests.support.controller import Controller, run_controller
from tests.support.user import PASSWORD, USER

CLI = [sys.executable, "-m", "remotecli.cli"]


@pytest.fixture
def demo(short_state_dir: Path) -> Iterator[Controller]:
    settings = Settings(
        environment="test", state_dir=short_state_dir, backend="fake", demo=True, warm_pool_auth=0
    )
    with run_controller(settings) as running:
        yield running


def _env(controller: Controller, token: str | None = None) -> dict[str, str]:
    return {
        **os.environ,
        "REMOTECLI_URL": controller.url,
        "REMOTECLI_TOKEN": token or controller.admin_token,
        "COLUMNS": "300",
    }


def _cli(
    controller: Controller, *args: str, token: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], env=_env(controller, token), capture_output=True, text=True, timeout=120
    )


def test_users_tokens_login_prompt_and_vms_from_the_command_line(demo: Controller) -> None:
    assert _cli(demo, "users", "create", "alice").returncode == 0
    made = _cli(demo, "tokens", "create", "user", "--user", "alice")
    assert made.returncode == 0, made.stderr
    user_token = made.stdout.strip()
    assert user_token.startswith("rcli_user_")

    # auth start: show the link, read the pasted code, wait for the verdict.
    proc = subprocess.Popen(
        [*CLI, "auth", "start", "--user", "alice", "--provider", "claude_code"],
        env=_env(demo, user_token), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdin is not None
    seen, url = "", None
    deadline = time.monotonic() + 60
    while url is None and time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 1)
        if ready:
            seen += proc.stdout.readline()
            found = re.search(r"(http://127\.0\.0\.1:\d+/claude/oauth/authorize\S+)", seen)
            url = found.group(1) if found else None
    assert url is not None, seen
    proc.stdin.write(login(url, USER, PASSWORD).pasted + "\n")
    proc.stdin.flush()
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, seen + rest
    assert "connected claude_code for alice" in rest

    ran = _cli(demo, "run", "--user", "alice", "--provider", "claude_code", "hello there",
               token=user_token)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert "You said: hello there" in ran.stdout

    listed = _cli(demo, "vm", "ls")
    assert listed.returncode == 0 and "cli" in listed.stdout and "alice" in listed.stdout
    vm_id = re.search(r"(vm_[0-9a-f]{16})", listed.stdout)
    assert vm_id is not None
    logs = _cli(demo, "vm", "logs", vm_id.group(1))
    assert logs.returncode == 0 and "agent.listening" in logs.stdout
    assert _cli(demo, "vm", "rm", vm_id.group(1)).returncode == 0

    # The user's token listed (never its text) and revoked: it stops working.
    tokens = _cli(demo, "tokens", "list")
    assert tokens.returncode == 0, tokens.stderr
    assert user_token not in tokens.stdout and user_token[:16] in tokens.stdout
    token_id = re.search(r"(tok_[0-9a-f]+)\s.*\buser\b", tokens.stdout)
    assert token_id is not None, tokens.stdout
    revoked = _cli(demo, "tokens", "revoke", token_id.group(1))
    assert revoked.returncode == 0 and f"revoked user token {token_id.group(1)}" in revoked.stderr
    refused = _cli(demo, "run", "--user", "alice", "--provider", "claude_code", "again",
                   token=user_token)  # fmt: skip
    assert refused.returncode == 1 and "invalid_token" in refused.stderr


def test_errors_are_one_line_with_the_code_and_a_non_zero_exit(demo: Controller) -> None:
    denied = _cli(demo, "vm", "ls", token="rcli_admin_wrong")
    assert denied.returncode == 1
    assert "invalid_token" in denied.stderr
    not_connected = _cli(demo, "run", "--user", "nobody", "--provider", "codex", "hi")
    assert not_connected.returncode == 1
    assert "unknown_user" in not_connected.stderr or "not_connected" in not_connected.stderr
