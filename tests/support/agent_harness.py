"""Start the real agent process for tests, the way a VM starts it.

The agent runs from a copy of just ``remotecli/{__init__,agent,providers}``
under ``python -S -E`` (no site-packages, no PYTHON* variables): every test
that uses it also proves the agent starts on a bare python3.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

import remotecli
from tests.support.poll import NotYet, eventually

PACKAGE = Path(remotecli.__file__).parent
AGENT_PARTS = ("__init__.py", "agent", "providers")


def copy_agent(dest: Path) -> Path:
    """Copy only what the guest image carries; return the directory to run from."""
    target = dest / "remotecli"
    target.mkdir(parents=True)
    for part in AGENT_PARTS:
        src = PACKAGE / part
        if src.is_dir():
            shutil.copytree(src, target / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, target / part)
    return dest


@dataclass
class RunningAgent:
    proc: subprocess.Popen[bytes]
    token: str
    socket: Path
    home: Path
    workspace: Path
    log_path: Path
    tcp_port: int | None
    clients: list[httpx.Client] = field(default_factory=list)

    def client(self, token: str | None = "default", timeout: float = 30.0) -> httpx.Client:
        headers = {}
        token = self.token if token == "default" else token
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        client = httpx.Client(
            transport=httpx.HTTPTransport(uds=str(self.socket)),
            base_url="http://agent",
            headers=headers,
            timeout=timeout,
        )
        self.clients.append(client)
        return client

    def log_records(self) -> list[dict[str, Any]]:
        records = []
        for line in self.log_path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                records.append(json.loads(line))
        return records

    def stop(self) -> int:
        for client in self.clients:
            client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@contextlib.contextmanager
def run_agent(
    tmp: Path,
    *,
    cli_path: Path | None = None,
    env: Mapping[str, str] | None = None,
    tcp: bool = False,
    extra_args: tuple[str, ...] = (),
    wrapper: tuple[str, ...] = (),
) -> Iterator[RunningAgent]:
    root = copy_agent(tmp / "image")
    token = secrets.token_urlsafe(24)
    token_file = tmp / "agent.token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    home, workspace, sock = tmp / "home", tmp / "home" / "workspace", tmp / "run" / "agent.sock"
    argv = [
        *wrapper,
        sys.executable, "-S", "-E", "-m", "remotecli.agent",
        "--token-file", str(token_file),
        "--unix", str(sock),
        "--tcp", "127.0.0.1:0" if tcp else "off",
        "--vsock", "off",
        "--home", str(home),
        *(["--cli-path", str(cli_path)] if cli_path else []),
        *extra_args,
    ]  # fmt: skip
    log_path = tmp / "agent.log"
    child_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp)}
    child_env.update(env or {})
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, cwd=root, stdout=log, stderr=subprocess.STDOUT, env=child_env)
    agent = RunningAgent(proc, token, sock, home, workspace, log_path, None)
    try:
        agent.tcp_port = _wait_listening(agent)
        yield agent
    finally:
        code = agent.stop()
        if code not in (0, -signal.SIGTERM):
            print(f"agent exited with {code}; log:\n{log_path.read_text()}", file=sys.stderr)


def _wait_listening(agent: RunningAgent, timeout: float = 20.0) -> int | None:
    def listening() -> dict[str, Any] | None:
        if agent.proc.poll() is not None:
            raise RuntimeError(
                f"agent exited with {agent.proc.returncode} before listening:\n"
                + agent.log_path.read_text()
            )
        for record in agent.log_records():
            if record.get("event") == "agent.listening":
                return record
        return None

    try:
        listened = eventually("the agent to listen", listening, timeout, interval=0.02)
    except NotYet:
        raise RuntimeError(
            f"agent not listening after {timeout} s:\n{agent.log_path.read_text()}"
        ) from None
    for listener in listened["listeners"]:
        if listener.startswith("tcp:"):
            return int(listener.rsplit(":", 1)[1])
    return None


def port_is_listening(port: int, host: str = "127.0.0.1") -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0
