"""Hostile input against the real agent process, from its OpenAPI document.

``remotecli/agent/openapi.py`` generates the document from the wire
(``agent/wire.py``), which the router is built from too; the first test fails
when the document and the routes ``AgentApp`` serves drift apart.
Schemathesis then fuzzes the real agent (``python -S -E``, the test bed's fake
CLIs) over TCP: with the VM token, no 5xx, no stack trace, JSON errors with
``code`` and ``message``, and a rejected request changes nothing (the logins,
the runs, every provider's credentials, the token file); without a token or
with a wrong one, every route but ``/health`` is a 401 and nothing changes.

A login fuzzing starts for real is cancelled at once, and the module ends by
checking that the agent has no child process left.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis

from remotecli.agent.app import AgentApp
from remotecli.agent.config import AgentConfig
from remotecli.agent.openapi import DOCUMENT
from remotecli.providers import PROVIDERS
from tests.fuzz.support import FUZZ_SETTINGS, FuzzCase, call_checked, describe
from tests.support import procfs
from tests.support.agent_harness import RunningAgent

SCHEMA = schemathesis.openapi.from_dict(DOCUMENT)
PUBLIC = {("GET", "/health")}
SAFE = {"GET", "HEAD", "OPTIONS"}


def test_the_document_lists_exactly_the_routes_the_agent_serves(tmp_path: Path) -> None:
    config = AgentConfig(token="t" * 16, home=tmp_path, workspace=tmp_path / "workspace")
    # The router's own table: (method, regex, handler, public).
    table = AgentApp(config)._routes
    served = {(method, _template(pattern)) for method, pattern, _, _ in table}
    documented = {
        (method.upper(), path) for path, item in DOCUMENT["paths"].items() for method in item
    }
    assert documented == served, (
        f"served but not in openapi.py: {sorted(served - documented)}; "
        f"in openapi.py but not served: {sorted(documented - served)}"
    )
    served_public = {(m, _template(pattern)) for m, pattern, _, public in table if public}
    documented_public = {
        (method.upper(), path)
        for path, item in DOCUMENT["paths"].items()
        for method, operation in item.items()
        if operation.get("security") == []
    }
    assert documented_public == served_public == PUBLIC, (documented_public, served_public)


def _template(pattern: re.Pattern[str]) -> str:
    """``/sessions/(?P<id>[^/]+)/?`` → ``/sessions/{id}``."""
    return re.sub(r"\(\?P<(\w+)>\[\^/\]\+\)", r"{\1}", pattern.pattern).removesuffix("/?")


@dataclass
class Target:
    """The agent under fuzzing and the token it holds now (``POST /identity`` rotates it)."""

    url: str
    token: str
    #: One client for the test's own look-ups (a new one per look-up costs more than the call).
    client: httpx.Client
    #: Where the agent keeps its token (run_agent's layout); POST /identity rewrites it.
    token_file: Path

    def use_token(self, token: str) -> None:
        self.token = token
        self.client.headers["Authorization"] = f"Bearer {token}"


@pytest.fixture(scope="module")
def agent_state(fuzz_agent: RunningAgent) -> Iterator[Target]:
    url = f"http://127.0.0.1:{fuzz_agent.tcp_port}"
    with httpx.Client(base_url=url, timeout=30) as client:
        target = Target(url, fuzz_agent.token, client, fuzz_agent.home.parent / "agent.token")
        target.use_token(fuzz_agent.token)
        yield target
        for session in client.get("/sessions").json()["sessions"]:
            client.delete(f"/sessions/{session['sessionId']}")
    leftover = [pid for pid in procfs.descendants(fuzz_agent.proc.pid) if procfs.alive(pid)]
    assert leftover == [], f"fuzzing left processes under the agent: {procfs.describe(leftover)}"


@SCHEMA.parametrize()
@FUZZ_SETTINGS
def test_with_the_vm_token(case: FuzzCase, agent_state: Target) -> None:
    """No 5xx, no leaks, JSON errors, and a rejected request changes nothing."""
    _spare_port_1455(case)
    unsafe = case.method.upper() not in SAFE
    before = _state(agent_state) if unsafe else {}
    bearer = {"Authorization": f"Bearer {agent_state.token}"}
    response, text = call_checked(case, agent_state.url, bearer, 60)
    status = response.status_code
    if status == 200 and case.path == "/identity":
        assert isinstance(case.body, dict)
        agent_state.use_token(str(case.body["token"]))  # the old one stopped working
    if status == 201 and case.path == "/auth/{provider}":
        agent_state.client.delete(f"/sessions/{response.json()['sessionId']}")
    if unsafe and 400 <= status < 500:
        after = _state(agent_state)
        assert before == after, f"a rejected request changed {before} into {after}: " + describe(
            case, status, text
        )


@SCHEMA.parametrize()
@FUZZ_SETTINGS
@pytest.mark.parametrize("token", [None, "wrong-token-0123456789"], ids=["none", "wrong"])
def test_without_the_vm_token(case: FuzzCase, agent_state: Target, token: str | None) -> None:
    """Every route but /health answers 401 (a method a path lacks: 405, a body over the
    cap: 413) and changes nothing."""
    unsafe = case.method.upper() not in SAFE
    before = _state(agent_state) if unsafe else {}
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    if token is None:  # schemathesis may have drawn a header from the security scheme
        case.headers.pop("authorization", None)  # a case-insensitive dict
    response, text = call_checked(case, agent_state.url, headers, 30, conform=False)
    status = response.status_code
    documented = case.method.lower() in DOCUMENT["paths"][case.path]
    if not documented:
        # The router answers a method a path lacks before it looks at the token.
        assert status == 405, describe(case, status, text)
    elif (case.method.upper(), case.path) not in PUBLIC:
        # Schemathesis's coverage phase also sends some cases with the header left out
        # on purpose, so a wrong token may meet either code; no token, only one.
        # The HTTP layer refuses a body over the cap before any route runs (413), unread.
        expected = {"token_required"} if token is None else {"token_required", "invalid_token"}
        expected = {"body_too_large"} if status == 413 else expected
        assert status in (401, 413), describe(case, status, text)
        assert response.json()["code"] in expected, describe(case, status, text)
    if unsafe:
        assert _state(agent_state) == before, describe(case, status, text)


def _spare_port_1455(case: FuzzCase) -> None:
    # A Codex browser login listens on the host's port 1455, which other test runs on
    # this host use: fuzz Codex logins in device-code mode instead (the route is the same).
    if case.path == "/auth/{provider}" and (case.path_parameters or {}).get("provider") == "codex":
        body: dict[str, Any] = case.body if isinstance(case.body, dict) else {}
        if body.get("mode", "localhost_callback") == "localhost_callback":
            case.body = {**body, "mode": "device_code"}


def _state(target: Target) -> dict[str, Any]:
    """What a rejected request must leave alone: logins, runs, credentials (by version),
    the token (the one the test holds and the file, compared by digest)."""
    client = target.client
    sessions = sorted(s["sessionId"] for s in client.get("/sessions").json()["sessions"])
    runs = sorted(r["runId"] for r in client.get("/prompts").json()["runs"])
    versions = {
        name: client.get("/credentials", params={"provider": name}).json()["version"]
        for name in PROVIDERS
    }
    token_file = hashlib.sha256(target.token_file.read_bytes()).hexdigest()[:16]
    return {
        "sessions": sessions,
        "runs": runs,
        "credentials": versions,
        "token": hashlib.sha256(target.token.encode()).hexdigest()[:16],
        "tokenFile": token_file,
    }
