"""Per-instance state directories: the one place an instance's host-side files live.

    <root>/<instance_id>/
        instance.json   who we are: backend, machine name, launcher pid, cgroups
        run/            the agent's run dir (bound to /run/agent in a container):
                        token (0600), agent.env (0600), agent.sock (made by the agent)
        console.log     the console, from the first byte
        ...             backend-specific (nspawn: upper/, work/, root/)

The directory is the record that survives a controller restart: ``scan``
finds every instance left on the host so it can be reconciled or reaped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from remotecli.errors import VmError
from remotecli.images import layout

#: Instance ids become machine names, host names and cgroup names.
ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,47}")
META = "instance.json"
#: sun_path's size on Linux, terminating NUL included.
UNIX_PATH_MAX = 108


def check_id(instance_id: str) -> str:
    if not ID_PATTERN.fullmatch(instance_id):
        raise VmError(
            f"invalid instance id {instance_id!r}: use 1-48 characters of a-z, 0-9 and '-', "
            "starting with a letter or digit (it becomes a machine and cgroup name)"
        )
    return instance_id


@dataclass(frozen=True)
class StateDir:
    path: Path

    @property
    def instance_id(self) -> str:
        return self.path.name

    @property
    def run(self) -> Path:
        return self.path / "run"

    @property
    def console(self) -> Path:
        return self.path / "console.log"

    @property
    def socket(self) -> Path:
        return self.run / Path(layout.AGENT_SOCKET).name

    def create(self, token: str, env: Mapping[str, str]) -> None:
        """Make the directory with the agent's token and environment file; refuse to reuse one."""
        create_private(
            self.path, self.run.name, socket=self.socket,
            too_long=f"the agent socket path {self.socket} is too long for a Unix socket "
            f"({UNIX_PATH_MAX} bytes max): use a shorter state root or instance id",
            taken=f"state directory {self.path} already exists: an instance with this id is "
            "running or was left behind; reap it first (backend.reap)",
        )  # fmt: skip
        write_private(self.run / Path(layout.TOKEN_FILE).name, token + "\n")
        write_private(self.run / Path(layout.AGENT_ENV_FILE).name, layout.env_file(env))

    def write_meta(self, meta: Mapping[str, Any]) -> None:
        tmp = self.path / f".{META}.tmp"
        write_private(tmp, json.dumps(dict(meta), indent=2) + "\n")
        tmp.replace(self.path / META)

    def read_meta(self) -> dict[str, Any]:
        try:
            data = json.loads((self.path / META).read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def remove(self) -> None:
        # The upper layer holds whatever the guest wrote (device nodes, odd
        # modes): rmtree as root handles it; a second destroy finds nothing.
        shutil.rmtree(self.path, ignore_errors=True)


def scan(root: Path) -> Iterator[StateDir]:
    """Every instance directory under ``root`` (running or left behind)."""
    if not root.is_dir():
        return
    for entry in sorted(root.iterdir()):
        if entry.is_dir() and ID_PATTERN.fullmatch(entry.name):
            yield StateDir(entry)


def create_private(top: Path, inner: str, *, socket: Path, too_long: str, taken: str) -> Path:
    """One instance's private directory ``top`` and ``top/inner`` (both 0700), made for it alone.

    Used for the state directory (``StateDir.create``) and the jail's chroot
    (``firecracker/jail.py``). Refuses, with ``too_long``, when ``socket`` (the
    longest Unix socket path that will be made inside) exceeds sun_path, and,
    with ``taken``, a ``top`` that exists: ``mkdir`` either makes it or fails,
    so two starts of one instance id never share it. Returns ``top/inner``.
    """
    if len(str(socket).encode()) >= UNIX_PATH_MAX:
        raise VmError(too_long)
    top.parent.mkdir(parents=True, exist_ok=True)
    try:
        top.mkdir(mode=0o700)
    except FileExistsError:
        raise VmError(taken) from None
    (top / inner).mkdir(mode=0o700)
    return top / inner


def write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def pid_alive(pid: int | None, marker: str) -> bool:
    """Whether ``pid`` runs and is still ours (its command line names ``marker``).

    The marker guards against pid reuse after a host reboot or a long gap.
    A zombie counts as gone: it holds no resources but its exit status.
    """
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    if re.search(r"^State:\s+Z", status, re.M):
        return False
    return marker.encode() in cmdline


async def wait_gone(pid: int | None, marker: str, timeout: float) -> bool:
    """Poll until ``pid`` is gone (for processes we did not spawn, so cannot ``wait``)."""
    end = time.monotonic() + timeout
    while pid_alive(pid, marker):
        if time.monotonic() > end:
            return False
        await asyncio.sleep(0.02)
    return True


def processes_naming(path: Path) -> list[int]:
    """Live processes (of those we may read) whose argv or environment names ``path``.

    The fake backend's agent has its state dir in its argv, and every CLI it
    starts has its HOME under it: after the agent is killed, its CLIs (each
    leading its own process group) are found this way.
    """
    needle = str(path).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            named = (entry / "cmdline").read_bytes() + b"\0" + (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue  # gone meanwhile, or not ours to read
        if state != "Z" and needle in named:
            found.append(int(entry.name))
    return sorted(found)


def mounts_under(path: Path) -> list[str]:
    """Mount points in this process's namespace at or below ``path``."""
    prefix = str(path)
    found = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) > 1:
                target = fields[1].replace("\\040", " ")
                if target == prefix or target.startswith(prefix + "/"):
                    found.append(target)
    return found
