"""The one long-lived process behind an instance (VMM, container launcher, fake agent).

Every backend starts it the same way: in its own session (a signal to the
controller's process group must not take instances down with it; pgid ==
pid, so its helpers can be killed as a group) with stdout + stderr appended
to the console log from the first byte (a VMM's own errors are evidence).

After a controller restart an instance is adopted by pid alone (``reap``);
it is then recognised by a marker in its command line (the VM or machine
name, the state directory), so a reused pid is never signalled.

How to *stop* it is the backend's choice, built from ``terminate`` and
``kill``: nspawn lets systemd shut down on SIGTERM and then kills its cgroup,
the fake signals the agent's whole group, QEMU is SIGTERMed then killed,
Firecracker is just killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from remotecli import proc
from remotecli.vmm import statedir


@dataclass
class VmmProcess:
    #: A string in the process's command line (the VM id) that proves it is ours.
    marker: str
    pid: int | None = None
    _proc: asyncio.subprocess.Process | None = None

    async def spawn(
        self,
        argv: Sequence[str],
        console: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        with console.open("ab") as out:
            # Long-lived, so not proc.run (which waits and times out).
            self._proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=out,
                stderr=asyncio.subprocess.STDOUT, start_new_session=True, env=env, cwd=cwd,
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

    async def terminate(self, timeout: float, *, group: bool = False) -> bool:
        """SIGTERM the process (``group``: its whole session), then wait; True once it exited.

        Call it only while ``alive()``: an adopted pid is signalled after its marker was checked.
        """
        assert self.pid is not None
        if group:
            proc.kill_group(self.pid, signal.SIGTERM)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
        return await self.wait_exit(timeout)

    async def kill(self, timeout: float = 5.0) -> None:
        """SIGKILL its whole session (pgid == pid), then wait. Idempotent."""
        if self.alive():
            assert self.pid is not None
            proc.kill_group(self.pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            await self.wait_exit(timeout)
