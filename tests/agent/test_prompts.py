"""Prompt runs through the real agent: NDJSON of normalized events, cancel, deadlines."""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import Any

import pytest

from remotecli.testbed import OAuthServer
from tests.support import procfs
from tests.support.agent_harness import RunningAgent
from tests.support.agent_helpers import all_gone, log_in, run_prompt
from tests.support.poll import eventually
from tests.support.user import PASSWORD, USER

PROVIDERS = ["claude_code", "codex", "gemini_cli"]


def _types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def _text(events: list[dict[str, Any]]) -> str:
    return "".join(e["text"] for e in events if e["type"] == "text" and not e["thinking"])


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_prompt_streams_normalized_events(agent: RunningAgent, provider: str) -> None:
    log_in(agent, provider, USER, PASSWORD)
    events = run_prompt(agent, provider, "hello there")
    types = _types(events)
    assert types[0] == "run.started" and types[-1] == "run.finished"
    assert "session" in types and types.count("result") == 1
    assert _text(events) == "You said: hello there"
    result = next(e for e in events if e["type"] == "result")
    assert result["isError"] is False
    assert result["usage"]["outputTokens"] is not None
    finished = events[-1]
    assert (finished["exitCode"], finished["credentialsChanged"]) == (0, False)
    assert "error" not in types


@pytest.mark.parametrize("provider", PROVIDERS)
def test_tool_use_and_result_are_paired(agent: RunningAgent, provider: str) -> None:
    log_in(agent, provider, USER, PASSWORD)
    events = run_prompt(agent, provider, "please run a tool")
    uses = [e for e in events if e["type"] == "tool_use"]
    results = [e for e in events if e["type"] == "tool_result"]
    assert len(uses) == 1 and len(results) == 1
    assert uses[0]["id"] == results[0]["id"]
    assert "hello" in results[0]["output"]
    assert results[0]["isError"] is False


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_failing_cli_is_reported_with_exit_code_and_stderr(
    agent: RunningAgent, provider: str
) -> None:
    log_in(agent, provider, USER, PASSWORD)
    events = run_prompt(agent, provider, "fail: the model is on fire")
    finished = events[-1]
    assert finished["type"] == "run.finished" and finished["exitCode"] != 0
    errors = [e for e in events if e["type"] == "error" and e["code"] != "warning"]
    assert errors, events
    assert any("on fire" in json.dumps(e) for e in errors), errors


@pytest.mark.parametrize("provider", PROVIDERS)
def test_api_key_mode_runs_without_credential_files(agent: RunningAgent, provider: str) -> None:
    events = run_prompt(agent, provider, "hi", apiKey="test-key-123")
    assert _text(events) == "You said: hi"
    assert events[-1]["exitCode"] == 0
    assert "test-key-123" not in agent.log_path.read_text()


@pytest.mark.parametrize("provider", ["claude_code", "codex"])
def test_rotated_refresh_tokens_are_reported_for_sync_back(
    agent: RunningAgent, oauth_server: OAuthServer, provider: str
) -> None:
    log_in(agent, provider, USER, PASSWORD)
    before = agent.client().get("/credentials", params={"provider": provider}).json()
    oauth_server.expire_access_tokens({"claude_code": "claude", "codex": "codex"}[provider])
    events = run_prompt(agent, provider, "hello")
    finished = events[-1]
    assert (finished["exitCode"], finished["credentialsChanged"]) == (0, True), events
    assert finished["credentialsVersion"] != before["version"]


def test_a_refresh_failure_says_log_in_again(
    agent: RunningAgent, oauth_server: OAuthServer
) -> None:
    log_in(agent, "codex", USER, PASSWORD)
    oauth_server.expire_access_tokens("codex")
    oauth_server.revoke_all("codex")
    events = run_prompt(agent, "codex", "hello")
    codes = [e["code"] for e in events if e["type"] == "error"]
    assert "refresh_failed" in codes or "auth_required" in codes, events
    # Nothing is wiped: the files stay for the controller to mark "needs login".
    assert (agent.home / ".codex/auth.json").exists()


def test_cancel_stops_a_hanging_run_and_its_processes(agent: RunningAgent) -> None:
    log_in(agent, "codex", USER, PASSWORD)
    events: list[dict[str, Any]] = []
    thread = threading.Thread(target=lambda: events.extend(run_prompt(agent, "codex", "hang")))
    thread.start()
    run_id = _wait_for_run(agent)
    children = procfs.descendants(agent.proc.pid)
    assert children
    response = agent.client().delete(f"/prompts/{run_id}")
    assert response.status_code == 202
    thread.join(30)
    assert not thread.is_alive()
    assert [e["code"] for e in events if e["type"] == "error"] == ["cancelled"]
    assert events[-1]["type"] == "run.finished"
    assert all_gone(children)
    assert agent.client().get("/prompts").json() == {"runs": []}


def test_a_run_past_its_deadline_is_stopped(agent: RunningAgent) -> None:
    log_in(agent, "gemini_cli", USER, PASSWORD)  # Gemini ignores SIGTERM
    events = run_prompt(agent, "gemini_cli", "hang", timeoutSeconds=1)
    errors = [e for e in events if e["type"] == "error"]
    assert [e["code"] for e in errors] == ["timeout"], events
    assert "1 s" in errors[0]["message"]
    assert all_gone(procfs.descendants(agent.proc.pid))


def test_hanging_up_stops_the_run(agent: RunningAgent) -> None:
    log_in(agent, "claude_code", USER, PASSWORD)
    body = json.dumps({"provider": "claude_code", "prompt": "hang"}).encode()
    request = (
        f"POST /prompts HTTP/1.1\r\nHost: agent\r\nAuthorization: Bearer {agent.token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    # A raw socket: closing it is an unambiguous hang-up (httpx may keep a
    # half-read stream's connection open).
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(agent.socket))
        sock.sendall(request)
        received = b""
        while b"run.started" not in received:
            received += sock.recv(4096)
        time.sleep(0.3)  # the run is hanging, not finishing
        children = procfs.descendants(agent.proc.pid)
        assert children
    assert all_gone(children)
    assert agent.client().get("/prompts").json() == {"runs": []}


def _wait_for_run(agent: RunningAgent) -> str:
    def first_run() -> str | None:
        runs = agent.client().get("/prompts").json()["runs"]
        return str(runs[0]["runId"]) if runs else None

    return eventually("the run to show up in GET /prompts", first_run, 10)
