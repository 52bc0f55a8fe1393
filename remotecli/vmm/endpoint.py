"""Where the host reaches an instance's agent: a Unix socket, TCP, or Firecracker's vsock.

Every backend gives its instances an ``agent_endpoint``; everything that talks
to an agent (the readiness probe, ``AgentClient``, the monitor, reconcile)
goes through it, so no caller knows which kind it is:

- ``unix``: containers and the fake backend (the agent's socket is bound
  into the instance's run directory).
- ``tcp``: QEMU without vhost-vsock (a ``hostfwd`` on 127.0.0.1 to the
  guest's port 8080).
- ``vsock``: Firecracker. Its vsock device is a Unix socket on the host; a
  connection becomes a guest vsock stream after ``CONNECT <port>\\n`` is
  answered by ``OK <host port>\\n``. After a snapshot restore the guest's
  vsock transport is reset: open connections die, so callers re-dial (each
  request here opens its own connection when the old one is gone).

The endpoint is plain data (it goes into an instance's meta file so a
restarted controller can find the agent again: ``to_json``/``from_json``).
A refused vsock CONNECT is a ``HandshakeError`` (a ``VmError`` and an
``OSError``, in the tree drawn in ``remotecli/errors.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpcore
import httpx

from remotecli.errors import VmError

Kind = Literal["unix", "tcp", "vsock"]
#: The vsock handshake's answer is one short line ("OK 1073741824\n").
HANDSHAKE_MAX = 64
#: What the HTTP clients put in the Host header: the agent ignores it.
BASE_URL = "http://agent"


class HandshakeError(VmError, OSError):
    """Firecracker's vsock multiplexer refused the CONNECT (no listener on that guest port).

    Also an ``OSError``: it is a failed connect, raised where one is expected
    (``probe_health`` reads any ``OSError`` as "cannot connect").
    """

    code = "vsock_refused"


@dataclass(frozen=True)
class AgentEndpoint:
    kind: Kind
    #: The Unix socket (``unix``) or Firecracker's vsock socket (``vsock``).
    path: Path | None = None
    host: str = ""
    #: The TCP port (``tcp``) or the guest's vsock port (``vsock``).
    port: int = 0

    @classmethod
    def unix(cls, path: Path) -> AgentEndpoint:
        return cls("unix", path=path)

    @classmethod
    def tcp(cls, host: str, port: int) -> AgentEndpoint:
        return cls("tcp", host=host, port=port)

    @classmethod
    def vsock(cls, uds: Path, port: int) -> AgentEndpoint:
        return cls("vsock", path=uds, port=port)

    def describe(self) -> str:
        if self.kind == "tcp":
            return f"tcp://{self.host}:{self.port}"
        if self.kind == "vsock":
            return f"vsock port {self.port} via {self.path}"
        return str(self.path)

    __str__ = describe

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "path": str(self.path) if self.path else None,
            "host": self.host,
            "port": self.port,
        }

    @classmethod
    def from_json(cls, data: typing.Mapping[str, Any]) -> AgentEndpoint:
        kind = data.get("kind")
        if kind not in ("unix", "tcp", "vsock"):
            raise VmError(f"unknown agent endpoint kind {kind!r}")
        path = data.get("path")
        return cls(
            kind,
            path=Path(path) if path else None,
            host=str(data.get("host") or ""),
            port=int(data.get("port") or 0),
        )

    # -- connecting ---------------------------------------------------------------

    async def open_connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A byte stream to the agent (the vsock handshake done). Bound it with a timeout."""
        if self.kind == "tcp":
            return await asyncio.open_connection(self.host, self.port)
        if self.path is None:
            raise VmError(f"a {self.kind} agent endpoint needs a socket path")
        reader, writer = await asyncio.open_unix_connection(str(self.path))
        if self.kind == "vsock":
            try:
                writer.write(handshake_request(self.port))
                await writer.drain()
                check_handshake(await reader.readline(), self.port)
            except BaseException:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
                raise
        return reader, writer

    def transport(self) -> httpx.AsyncBaseTransport:
        """An httpx transport whose every connection goes to this endpoint."""
        if self.kind == "unix":
            return httpx.AsyncHTTPTransport(uds=str(self.path))
        transport = httpx.AsyncHTTPTransport(trust_env=False)
        # httpx has no hook for a custom connect; its pool (httpcore) does.
        transport._pool = httpcore.AsyncConnectionPool(network_backend=_EndpointBackend(self))
        return transport


def handshake_request(port: int) -> bytes:
    return f"CONNECT {port}\n".encode()


def check_handshake(line: bytes, port: int) -> None:
    if not line.startswith(b"OK "):
        shown = line.decode(errors="replace").strip() or "the connection closed"
        raise HandshakeError(
            f"vsock CONNECT {port} refused ({shown}): nothing listens on that port in the guest"
        )


class _EndpointBackend(httpcore.AsyncNetworkBackend):
    """httpcore's connect, redirected: TCP to the endpoint's port, or the vsock handshake."""

    def __init__(self, endpoint: AgentEndpoint) -> None:
        self.endpoint = endpoint
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        ep = self.endpoint
        if ep.kind == "tcp":
            return await self.inner.connect_tcp(ep.host, ep.port, timeout=timeout)
        assert ep.path is not None
        stream = await self.inner.connect_unix_socket(str(ep.path), timeout=timeout)
        try:
            await stream.write(handshake_request(ep.port), timeout=timeout)
            line = b""
            while not line.endswith(b"\n") and len(line) < HANDSHAKE_MAX:
                chunk = await stream.read(HANDSHAKE_MAX - len(line), timeout=timeout)
                if not chunk:
                    break
                line += chunk
            check_handshake(line, ep.port)
        except HandshakeError as exc:
            await stream.aclose()
            raise httpcore.ConnectError(str(exc)) from exc
        except BaseException:
            await stream.aclose()
            raise
        return stream

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return await self.connect_tcp("agent", 80, timeout)

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


def free_tcp_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the caller retries if another process takes it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
