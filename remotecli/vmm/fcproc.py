"""A long-lived VMM process we start, or adopt after a controller restart, and kill.

Also how an unjailed firecracker is launched (``bound_vm_dir_argv``).

Started in its own session (a signal to the controller's process group must
not take VMs down with it) with stdout+stderr appended to the console log
from the first byte. Adopted by pid alone (``reap``) it is recognised by a
marker in its command line, so a reused pid is never killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from remotecli import proc
from remotecli.vmm import statedir

# $1 the state dir, $2 VM_DIR, then the command. Positional: no path is parsed by sh.
LAUNCHER = """set -eu
mount --bind "$1" "$2"
shift 2
exec "$@"
"""


def bound_vm_dir_argv(
    state_dir: Path, vm_dir: Path, netns: Path | None, command: Sequence[str]
) -> list[str]:
    """``command`` (unjailed firecracker) in a private mount namespace where ``state_dir`` is
    bind-mounted on ``vm_dir`` (nothing reaches the host's mounts), in ``netns`` if given."""
    argv = [
        "unshare", "--mount", "--propagation", "private", "--",
        "/bin/sh", "-c", LAUNCHER, "remotecli-fc", str(state_dir), str(vm_dir), *command,
    ]  # fmt: skip
    return ["nsenter", f"--net={netns}", "--", *argv] if netns else argv


@dataclass
class VmmProcess:
    #: A string in the process's command line (the VM id) that proves it is ours.
    marker: str
    pid: int | None = None
    _proc: asyncio.subprocess.Process | None = None

    async def spawn(self, argv: Sequence[str], console: Path) -> None:
        with console.open("ab") as out:
            # Long-lived, so not proc.run (which waits and times out).
            self._proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=out,
                stderr=asyncio.subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self.pid = self._proc.pid

    def alive(self) -> bool:
        if self._proc is not None:
            return self._proc.returncode is None
        return statedir.pid_alive(self.pid, self.marker)

    def exit_code(self) -> int | None:
        if self._proc is not None:
            return self._proc.returncode
        return None if self.alive() else -1  # adopted: its status is unknown

    async def wait_exit(self, timeout: float) -> bool:
        if self._proc is not None:
            try:
                await asyncio.wait_for(self._proc.wait(), timeout)
            except TimeoutError:
                return False
            return True
        return await statedir.wait_gone(self.pid, self.marker, timeout)

    async def kill(self, timeout: float = 5.0) -> None:
        """SIGKILL its whole session (pgid == pid), then wait. Idempotent."""
        if self.alive():
            assert self.pid is not None
            proc.kill_group(self.pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            await self.wait_exit(timeout)
