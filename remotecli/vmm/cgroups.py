"""One cgroup per container, made by us before nspawn starts and removed after it stops.

Why: on a host whose PID 1 is not systemd, ``systemd-nspawn --register=no
--keep-unit`` uses the cgroup it was started in as the container's own
(``<cg>/supervisor`` for itself, ``<cg>/payload`` for the guest). Started
from the controller's cgroup, every container would share one ``payload``.
So the launcher moves itself into ``<root>/remotecli-<id>`` first.

On a hybrid host (cgroup v1 controllers + v2 at /sys/fs/cgroup/unified)
nspawn mirrors that path into the v1 ``name=systemd`` hierarchy; neither copy
goes away by itself, so ``remove`` deletes both, deepest first.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from remotecli.errors import BackendUnavailable
from remotecli.vmm import hostcheck


@dataclass(frozen=True)
class InstanceCgroup:
    unified: Path
    #: Copies of the same path in v1 named hierarchies (hybrid hosts).
    mirrors: tuple[Path, ...] = ()

    @classmethod
    def on_this_host(cls, name: str) -> InstanceCgroup:
        layout = hostcheck.cgroup_layout(hostcheck.LiveHost())
        root = hostcheck.unified_root(layout)
        if root is None:
            raise BackendUnavailable(
                f"nspawn needs a cgroup v2 hierarchy; this host's cgroups are {layout!r}"
            )
        named = hostcheck.named_systemd_root(layout)
        return cls(root / name, (named / name,) if named else ())

    @property
    def procs_file(self) -> Path:
        return self.unified / "cgroup.procs"

    def create(self) -> None:
        try:
            self.unified.mkdir()
        except FileExistsError:
            raise BackendUnavailable(
                f"cgroup {self.unified} already exists: an instance with this name runs or "
                "was left behind; reap it first"
            ) from None

    def dirs(self) -> list[Path]:
        """Every directory of this cgroup in every hierarchy, deepest first."""
        found: list[Path] = []
        for top in (self.unified, *self.mirrors):
            if top.is_dir():
                for here, subdirs, _files in os.walk(top, topdown=False):
                    found.extend(Path(here) / d for d in subdirs)
                found.append(top)
        return found

    def pids(self) -> list[int]:
        """Processes in the cgroup (the v2 tree only: a mirror lists the same ones again)."""
        pids: set[int] = set()
        for directory in self.dirs():
            if directory.is_relative_to(self.unified):
                with contextlib.suppress(OSError):
                    pids |= {int(p) for p in (directory / "cgroup.procs").read_text().split()}
        return sorted(pids)

    def kill(self) -> None:
        """SIGKILL everything in the cgroup (container payload included)."""
        kill_file = self.unified / "cgroup.kill"
        try:
            kill_file.write_text("1")  # kernel 5.14+: atomic, follows forks
            return
        except OSError:
            pass
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    async def remove(self, timeout: float = 5.0) -> list[str]:
        """rmdir depth-first; retry while exiting processes still populate it. Returns leftovers."""
        end = time.monotonic() + timeout
        while True:
            problems = []
            for directory in self.dirs():
                try:
                    directory.rmdir()
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    problems.append(f"{directory}: {os.strerror(exc.errno or errno.EIO)}")
            if not problems or time.monotonic() > end:
                return problems
            await asyncio.sleep(0.05)
