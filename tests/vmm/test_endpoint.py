"""AgentEndpoint: the real agent reached over Unix, TCP and a Firecracker-style vsock socket.

The vsock multiplexer here does what Firecracker's does on the host side
(docs/vsock.md in firecracker-microvm/firecracker): a connection to its Unix
socket sends ``CONNECT <port>\\n``; if the guest listens on that port the
answer is ``OK <host-side port>\\n`` and the stream is the guest's from then
on, else the connection is closed. Our guest is the real agent on TCP.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from remotecli.vmm.agentclient import AgentClient, AgentUnreachable
from remotecli.vmm.endpoint import AgentEndpoint, HandshakeError
from remotecli.vmm.readiness import probe_health
from tests.support.agent_harness import RunningAgent, run_agent

pytestmark = pytest.mark.anyio

GUEST_PORT = 8080


@pytest.fixture
def tcp_agent(tmp_path: Path) -> Iterator[RunningAgent]:
    with run_agent(tmp_path, tcp=True) as running:
        yield running


@contextlib.asynccontextmanager
async def vsock_mux(uds: Path, agent_port: int) -> AsyncIterator[list[bytes]]:
    """A host-side vsock socket in front of the agent; yields the handshake lines seen."""
    seen: list[bytes] = []
    writers: list[asyncio.StreamWriter] = []

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        line = await reader.readline()
        seen.append(line)
        if line != f"CONNECT {GUEST_PORT}\n".encode():
            writer.close()  # Firecracker closes: no listener on that guest port
            return
        guest_r, guest_w = await asyncio.open_connection("127.0.0.1", agent_port)
        writers.append(guest_w)
        writer.write(b"OK 1073741824\n")
        await writer.drain()
        await asyncio.gather(pipe(reader, guest_w), pipe(guest_r, writer))

    server = await asyncio.start_unix_server(handle, str(uds))
    try:
        yield seen
    finally:
        server.close()
        await server.wait_closed()
        for writer in writers:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def test_tcp_endpoint_reaches_the_agent(tcp_agent: RunningAgent) -> None:
    assert tcp_agent.tcp_port
    endpoint = AgentEndpoint.tcp("127.0.0.1", tcp_agent.tcp_port)
    assert (await probe_health(endpoint)).ok
    async with AgentClient(endpoint, tcp_agent.token) as agent:
        assert (await agent.request("GET", "/sessions"))["sessions"] == []


async def test_vsock_endpoint_does_the_connect_handshake(
    tcp_agent: RunningAgent, tmp_path: Path
) -> None:
    assert tcp_agent.tcp_port
    uds = tmp_path / "v.sock"
    async with vsock_mux(uds, tcp_agent.tcp_port) as seen:
        endpoint = AgentEndpoint.vsock(uds, GUEST_PORT)
        probe = await probe_health(endpoint, token=tcp_agent.token)
        assert probe.ok, probe.detail
        async with AgentClient(endpoint, tcp_agent.token) as agent:
            assert (await agent.health()).status == "ok"
            assert (await agent.request("GET", "/sessions"))["sessions"] == []
    assert seen and all(line == b"CONNECT 8080\n" for line in seen)


async def test_vsock_endpoint_refused_port_says_nothing_listens(
    tcp_agent: RunningAgent, tmp_path: Path
) -> None:
    assert tcp_agent.tcp_port
    uds = tmp_path / "v.sock"
    async with vsock_mux(uds, tcp_agent.tcp_port):
        wrong = AgentEndpoint.vsock(uds, 9999)
        probe = await probe_health(wrong)
        assert not probe.ok and "nothing listens on that port" in probe.detail
        with pytest.raises(HandshakeError):
            await wrong.open_connection()
        async with AgentClient(wrong, tcp_agent.token) as agent:
            with pytest.raises(AgentUnreachable, match="vsock port 9999"):
                await agent.health()


def test_endpoint_round_trips_through_json(tmp_path: Path) -> None:
    for endpoint in (
        AgentEndpoint.unix(tmp_path / "a.sock"),
        AgentEndpoint.tcp("127.0.0.1", 41234),
        AgentEndpoint.vsock(tmp_path / "v.sock", 8080),
    ):
        assert AgentEndpoint.from_json(endpoint.to_json()) == endpoint
