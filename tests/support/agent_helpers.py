"""Small helpers for talking to a running agent in tests."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support import procfs
from tests.support.agent_harness import RunningAgent
from tests.support.poll import NotYet, eventually


def error_of(response: httpx.Response) -> tuple[int, str]:
    """(status, code) of an error response; the message must be there too."""
    body = response.json()
    assert body.get("message"), body
    return response.status_code, body["code"]


def start_login(agent: RunningAgent, provider: str, mode: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"waitSeconds": 20}
    if mode is not None:
        body["mode"] = mode
    response = agent.client().post(f"/auth/{provider}", json=body)
    assert response.status_code == 201, response.text
    session: dict[str, Any] = response.json()
    assert session["phase"] == "awaiting_user", session
    return session


def wait_ended(agent: RunningAgent, session_id: str, seconds: float = 25) -> dict[str, Any]:
    response = agent.client(timeout=seconds + 10).get(
        "/credentials/status", params={"sessionId": session_id, "wait": seconds}
    )
    status: dict[str, Any] = response.json()
    return status


def log_in(agent: RunningAgent, provider: str, user: str, password: str) -> None:
    """A complete login in the provider's default mode, as a user would do it."""
    from remotecli.testbed import login

    session = start_login(agent, provider)
    outcome = login(session["oauthUrl"], user, password)
    answer = (
        {"callbackUrl": outcome.redirect_url}
        if session["mode"] == "localhost_callback"
        else {"code": outcome.pasted}
    )
    done = agent.client().post(f"/sessions/{session['sessionId']}/code", json=answer).json()
    assert done["phase"] == "authenticated", done


def run_prompt(
    agent: RunningAgent, provider: str, prompt: str, **extra: Any
) -> list[dict[str, Any]]:
    """POST /prompts and collect every NDJSON line."""
    import json

    lines: list[dict[str, Any]] = []
    body = {"provider": provider, "prompt": prompt, **extra}
    with agent.client(timeout=60).stream("POST", "/prompts", json=body) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"] == "application/x-ndjson"
        for line in response.iter_lines():
            if line:
                lines.append(json.loads(line))
    return lines


def all_gone(pids: list[int], seconds: float = 10.0) -> bool:
    """Wait until none of ``pids`` is alive (a stop may still be in its grace period)."""
    try:
        eventually(
            "the processes to end", lambda: not any(procfs.alive(pid) for pid in pids), seconds
        )
    except NotYet:
        return False
    return True
