"""A compromised agent cannot fill the controller's memory with its answers (SECURITY.md E13).

A hostile "agent" on a Unix socket answers every request with a body that
never ends: one endless JSON answer, one endless line in a streamed run, an
endless error body. The real ``AgentClient`` must stop reading at its cap,
hang up, and raise ``answer_too_large`` (if it buffered, it would read until
the test's timeout). Honest answers of the same shapes still work.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from remotecli.vmm.agentclient import (
    MAX_ANSWER_BYTES,
    MAX_LINE_BYTES,
    AgentClient,
    AgentRequestError,
)
from tests.support.poll import NotYet, eventually_async

pytestmark = pytest.mark.anyio

CHUNK = b"x" * 65536


@dataclass
class HostileAgent:
    """Answers paths naming ``honest`` properly, everything else with a body that never ends."""

    socket: Path
    sent: dict[str, int] = field(default_factory=dict)
    hung_up: list[str] = field(default_factory=list)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        target = head.split(b" ", 2)[1].decode()
        length = next(
            (int(line.split(b":")[1]) for line in head.split(b"\r\n")
             if line.lower().startswith(b"content-length:")), 0,
        )  # fmt: skip
        await reader.readexactly(length)
        status = b"500 Internal Server Error" if target == "/error" else b"200 OK"
        kind = b"application/x-ndjson" if target.startswith("/runs") else b"application/json"
        writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: " + kind
                     + b"\r\nTransfer-Encoding: chunked\r\n\r\n")  # fmt: skip
        try:
            if "honest" in target:
                body = b'{"ok": true}\n{"ok": 2}\n' if "runs" in target else b'{"ok": true}'
                writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
                await writer.drain()
                return
            prefix = b'{"event": "text", "text": "' if target.startswith("/runs") else b'{"a": "'
            writer.write(b"%x\r\n%s\r\n" % (len(prefix), prefix))
            self.sent[target] = 0
            while True:  # no end, no newline: until the client hangs up
                writer.write(b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK))
                await writer.drain()
                self.sent[target] += len(CHUNK)
        except (ConnectionError, BrokenPipeError):
            self.hung_up.append(target)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, BrokenPipeError):
                await writer.wait_closed()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def hostile(tmp_path: Path) -> AsyncIterator[HostileAgent]:
    agent = HostileAgent(tmp_path / "agent.sock")
    server = await asyncio.start_unix_server(agent.serve, path=str(agent.socket))
    async with server:
        yield agent


async def test_an_endless_answer_is_cut_at_the_cap(hostile: HostileAgent) -> None:
    async with AgentClient(hostile.socket, "t") as client:
        with pytest.raises(AgentRequestError) as caught:
            await client.request("GET", "/health")
        assert caught.value.code == "answer_too_large", caught.value.message
        assert "GET /health passed 16 MiB" in caught.value.message
        with pytest.raises(AgentRequestError) as caught:
            await client.request("POST", "/error", json={"x": 1})
        assert caught.value.code == "answer_too_large", caught.value.message
        assert caught.value.status == 500
        assert await client.request("GET", "/honest") == {"ok": True}
    await _until(lambda: {"/health", "/error"} <= set(hostile.hung_up), hostile)
    assert MAX_ANSWER_BYTES <= hostile.sent["/health"] < 4 * MAX_ANSWER_BYTES, hostile.sent


async def test_an_endless_line_in_a_streamed_run_is_cut_at_the_cap(hostile: HostileAgent) -> None:
    async with AgentClient(hostile.socket, "t") as client:
        got = []
        with pytest.raises(AgentRequestError) as caught:
            async for item in client.stream("POST", "/runs", json={"prompt": "hi"}):
                got.append(item)
        assert caught.value.code == "answer_too_large", caught.value.message
        assert "streamed line to POST /runs" in caught.value.message
        assert got == []
        honest = [item async for item in client.stream("POST", "/runs/honest", json={})]
        assert honest == [{"ok": True}, {"ok": 2}]
    await _until(lambda: "/runs" in hostile.hung_up, hostile)
    assert MAX_LINE_BYTES <= hostile.sent["/runs"] < 4 * MAX_LINE_BYTES, hostile.sent


async def _until(done: object, agent: HostileAgent) -> None:
    assert callable(done)
    try:
        await eventually_async("the client to hang up", done, 10)
    except NotYet:
        raise AssertionError(
            f"the client did not hang up: sent {agent.sent}, hung up {agent.hung_up}"
        ) from None
