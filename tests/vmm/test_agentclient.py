"""The host's agent client reads answers into the wire's dataclasses, or refuses them.

An "agent" on a Unix socket answers with JSON that is not the wire's shape
(a wrong type, a missing key, an unknown run event): each typed call raises
``AgentRequestError`` with ``bad_response`` and says which key, instead of
handing a caller a half-read dict.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from remotecli.agent import wire
from remotecli.vmm.agentclient import AgentClient, AgentRequestError

pytestmark = pytest.mark.anyio

ANSWERS: dict[str, list[dict[str, object]]] = {
    "/health": [{"status": "ok", "timestamp": "t", "activeSessions": "two", "activeRuns": 0,
                 "version": "1"}],
    "/sessions": [{"sessions": [{"sessionId": "s"}]}],
    "/prompts": [{"type": "run.started", "runId": "r", "provider": "codex"},
                 {"type": "shout", "text": "hi"}],
}  # fmt: skip


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    method, target = head.split(b" ", 2)[:2]
    length = next(
        (int(line.split(b":")[1]) for line in head.split(b"\r\n")
         if line.lower().startswith(b"content-length:")), 0,
    )  # fmt: skip
    await reader.readexactly(length)
    lines = ANSWERS[target.decode().split("?")[0]]
    streamed = method == b"POST"
    body = b"".join(json.dumps(line).encode() + b"\n" for line in lines) if streamed else (
        json.dumps(lines[0]).encode()
    )  # fmt: skip
    kind = b"application/x-ndjson" if streamed else b"application/json"
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: " + kind + b"\r\nContent-Length: %d\r\n"
                 b"Connection: close\r\n\r\n%s" % (len(body), body))  # fmt: skip
    await writer.drain()
    writer.close()


@pytest.fixture
async def socket(tmp_path: Path) -> AsyncIterator[Path]:
    path = tmp_path / "agent.sock"
    server = await asyncio.start_unix_server(_serve, path=str(path))
    async with server:
        yield path


async def test_an_answer_of_the_wrong_shape_is_a_bad_response(socket: Path) -> None:
    async with AgentClient(socket, "t") as client:
        with pytest.raises(AgentRequestError) as caught:
            await client.health()
        assert (caught.value.code, caught.value.status) == ("bad_response", 200)
        assert "GET /health is not a Health: Health.activeSessions: expected a number, got str" in (
            caught.value.message
        )
        with pytest.raises(AgentRequestError) as caught:
            await client.logins()
        assert caught.value.code == "bad_response"
        assert "Sessions.sessions[0]: the key 'provider' is missing" in caught.value.message


async def test_a_streamed_line_that_is_no_run_event_is_a_bad_response(socket: Path) -> None:
    async with AgentClient(socket, "t") as client:
        seen: list[wire.RunEvent] = []
        with pytest.raises(AgentRequestError) as caught:
            async for event in client.run(wire.RunPrompt("codex", "hi")):
                seen.append(event)
        assert seen == [wire.RunStarted(run_id="r", provider="codex")]
        assert caught.value.code == "bad_response"
        assert "not a run event: a run event of unknown type 'shout'" in caught.value.message
