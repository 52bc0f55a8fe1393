"""Start the agent: listen on TCP, AF_VSOCK and a Unix socket; stop cleanly on SIGTERM.

The line ``{"event": "agent.listening", ...}`` on stdout is the readiness
marker: the agent prints it only once every requested listener is bound, so a
console that shows it proves the agent answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from pathlib import Path

from remotecli import __version__
from remotecli.agent.app import AgentApp
from remotecli.agent.config import AgentConfig
from remotecli.agent.http import HttpServer
from remotecli.agent.log import log

VMADDR_CID_ANY = 0xFFFFFFFF


async def serve(config: AgentConfig, *, stop: asyncio.Event | None = None) -> None:
    """Run until SIGTERM/SIGINT (or ``stop`` is set); every child is stopped on the way out."""
    app = AgentApp(config)
    http = HttpServer(app, max_body=config.max_body)
    servers: list[asyncio.Server] = []
    listening: list[str] = []
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        if config.unix_socket is not None:
            path = config.unix_socket
            path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # a stale socket from a previous run
            servers.append(await asyncio.start_unix_server(http.serve_client, path=str(path)))
            os.chmod(path, 0o660)
            listening.append(f"unix:{path}")
        if config.tcp_port is not None:
            server = await asyncio.start_server(
                http.serve_client, config.tcp_host, config.tcp_port, reuse_address=True
            )
            servers.append(server)
            port = server.sockets[0].getsockname()[1]
            listening.append(f"tcp:{config.tcp_host}:{port}")
        if config.vsock_port is not None:
            vsock = _vsock_listener(config.vsock_port)
            if vsock is not None:
                servers.append(await asyncio.start_server(http.serve_client, sock=vsock))
                listening.append(f"vsock:{config.vsock_port}")
        log("agent.listening", version=__version__, listeners=listening, home=str(config.home))
        await stop.wait()
    finally:
        log("agent.stopping")
        for server in servers:
            server.close()
        await app.shutdown()
        await http.close_connections()
        for server in servers:
            await server.wait_closed()
        if config.unix_socket is not None:
            with contextlib.suppress(FileNotFoundError):
                Path(config.unix_socket).unlink()  # noqa: ASYNC240 - one unlink at exit
        log("agent.stopped")


def _vsock_listener(port: int) -> socket.socket | None:
    """A bound AF_VSOCK socket, or None where the kernel has no vsock (a container, a laptop)."""
    family = getattr(socket, "AF_VSOCK", None)
    if family is None:
        log("agent.vsock_unavailable", reason="python has no AF_VSOCK")
        return None
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        log("agent.vsock_unavailable", reason=exc.strerror)
        return None
    try:
        sock.bind((VMADDR_CID_ANY, port))
        sock.listen(64)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        log("agent.vsock_unavailable", reason=exc.strerror)
        return None
    return sock
