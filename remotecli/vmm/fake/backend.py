"""The in-process fake backend: the REAL agent as a host process, for control-plane tests.

No kernel, no init, no isolation: ``start()`` runs ``python -S -E -u -m
remotecli.agent`` on a temporary Unix socket with its output in a console
file, and ``wait_ready()`` runs the same readiness tracker as every backend
(KERNEL_BOOTED and INIT_STARTED are skipped, with the reason). Failures the
controller must handle are simulated on request::

    backend = FakeBackend(tmp_path, cli_path=fake_cli_bin_dir())
    backend.fail_next(FakeFault.CRASHES)        # the next instance's agent crashes
    instance = backend.create(spec)

``-S -E`` keep the agent honest: no site-packages, no PYTHON* variables, as
on the image's bare python3.

``FakeBackend(..., snapshots=True)`` follows the snapshot contract
(``base.SnapshotBackend``) for the controller's restore path: a "snapshot"
records the golden token and environment, and a "restore" starts a fresh
agent process that holds the golden token, as a restored VM's agent would.
The clone then gets its own identity through the real ``POST /identity``
(``restore.wait_restored``). No memory is saved or restored: what this
exercises is the control plane, not the VMM.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import shlex
import signal
import sys
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path

import remotecli
from remotecli import proc
from remotecli.errors import VmError
from remotecli.images import layout
from remotecli.vmm import lifecycle, readiness, statedir
from remotecli.vmm.base import (
    InstanceSpec,
    InstanceState,
    Phase,
    Readiness,
    Snapshot,
    UnitState,
)
from remotecli.vmm.endpoint import AgentEndpoint
from remotecli.vmm.vmmproc import VmmProcess

SKIPPED = {
    Phase.KERNEL_BOOTED: "the fake backend runs the agent as a host process: no kernel",
    Phase.INIT_STARTED: "the fake backend starts the agent directly: no init",
}
#: Where ``-m remotecli.agent`` finds the package without site-packages.
PACKAGE_PARENT = Path(remotecli.__file__).resolve().parent.parent
STOP_SECONDS = 5.0


class FakeFault(enum.Enum):
    NONE = "none"
    #: The process runs but never binds its listeners (a hung agent).
    NEVER_LISTENS = "never_listens"
    #: The agent raises at start: a real traceback on the console, exit code 1.
    CRASHES = "crashes"


_FAULT_CODE = {
    FakeFault.NEVER_LISTENS: (
        "import sys, time, remotecli.agent.server\n"
        "print('fake: the agent hangs before listening (FakeFault.NEVER_LISTENS)', flush=True)\n"
        "time.sleep(86400)\n"
    ),
    FakeFault.CRASHES: (
        "import remotecli.agent.server\n"
        "raise RuntimeError('simulated crash at start (FakeFault.CRASHES)')\n"
    ),
}


class FakeBackend:
    name = "fake"
    isolation = "fake"
    supports_snapshots = False

    def __init__(
        self,
        state_root: Path,
        *,
        cli_path: Path | None = None,
        env: Mapping[str, str] | None = None,
        fault: FakeFault = FakeFault.NONE,
        snapshots: bool = False,
    ) -> None:
        self.state_root = state_root
        self.supports_snapshots = snapshots
        self.cli_path = cli_path
        self.env = dict(env or {})
        self.default_fault = fault
        self._next_faults: deque[FakeFault] = deque()

    def fail_next(self, fault: FakeFault, count: int = 1) -> None:
        """The next ``count`` instances created get ``fault`` (then the default again)."""
        self._next_faults.extend([fault] * count)

    def create(self, spec: InstanceSpec) -> FakeInstance:
        statedir.check_id(spec.instance_id)
        fault = self._next_faults.popleft() if self._next_faults else self.default_fault
        return FakeInstance(self, spec, fault)

    async def create_snapshot(self, spec: InstanceSpec, directory: Path) -> Snapshot:
        """Boot ``spec`` to AGENT_READY (as a VM backend would before saving), record, destroy."""
        if not self.supports_snapshots:
            raise VmError("this fake backend was made without snapshots (snapshots=True)")

        async def record(boot_phases: Mapping[str, float]) -> Snapshot:
            return Snapshot(
                backend=self.name, directory=directory, image=spec.image,
                golden_token=spec.agent_token, boot_phases=boot_phases,
                meta={"agent_env": dict(spec.agent_env), "kind": "fake: no memory was saved"},
            )  # fmt: skip

        return await lifecycle.saved_cold_boot(self.create(spec), record)

    def restore(self, spec: InstanceSpec, snapshot: Snapshot) -> FakeInstance:
        if not self.supports_snapshots:
            raise VmError("this fake backend was made without snapshots (snapshots=True)")
        instance = self.create(spec)
        instance.snapshot = snapshot
        return instance

    async def list_running(self) -> list[str]:
        """Ids of instances found under ``state_root``: running, or left behind."""
        return [d.instance_id for d in statedir.scan(self.state_root)]

    async def reap(self, instance_id: str) -> None:
        spec, meta = lifecycle.adopted(self.state_root, instance_id)
        instance = FakeInstance(self, spec, FakeFault.NONE)
        instance.process.pid = meta.get("pid")
        await instance.destroy()


class FakeInstance:
    def __init__(self, backend: FakeBackend, spec: InstanceSpec, fault: FakeFault) -> None:
        self.backend = backend
        self.spec = spec
        self.fault = fault
        self.state = InstanceState.CREATED
        self.readiness = Readiness()
        self.dir = statedir.StateDir(backend.state_root / spec.instance_id)
        self.agent_socket = self.dir.socket
        self.agent_endpoint = AgentEndpoint.unix(self.agent_socket)
        self.console_path = self.dir.console
        # The state dir is in the agent's argv (and argv[1] of a fault's): reap() finds it.
        self.process = VmmProcess(str(self.dir.path))
        self.started_at = 0.0
        #: Set by ``FakeBackend.restore``: this instance wakes up holding the golden token.
        self.snapshot: Snapshot | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def argv(self) -> list[str]:
        python = [sys.executable, "-S", "-E", "-u"]
        if self.fault is not FakeFault.NONE:
            # The state dir as argv[1]: reap() recognises its processes by it.
            return [*python, "-c", _FAULT_CODE[self.fault], str(self.dir.path)]
        run = self.dir.run
        argv = [
            *python, "-m", "remotecli.agent",
            "--token-file", str(run / Path(layout.TOKEN_FILE).name),
            "--unix", str(self.agent_socket), "--tcp", "off", "--vsock", "off",
            "--home", str(self.dir.path / "home"),
        ]  # fmt: skip
        if self.backend.cli_path is not None:
            argv += ["--cli-path", str(self.backend.cli_path)]
        # As the unit does with $REMOTECLI_AGENT_ARGS from agent.env.
        return argv + shlex.split(self.spec.agent_env.get("REMOTECLI_AGENT_ARGS", ""))

    async def start(self) -> None:
        lifecycle.begin_start(self)
        token = self.snapshot.golden_token if self.snapshot else self.spec.agent_token
        self.dir.create(token, self.spec.agent_env)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.dir.path / "home"),
            "LANG": "C.UTF-8",
            **self.backend.env,
            **{k: v for k, v in self.spec.agent_env.items() if k != "REMOTECLI_AGENT_ARGS"},
        }
        try:
            self.started_at = time.monotonic()
            await self.process.spawn(self.argv(), self.console_path, env=env, cwd=PACKAGE_PARENT)
            self.dir.write_meta({"backend": "fake", "pid": self.pid, "fault": self.fault.value})
            if self.snapshot is not None:
                # The VMM's part of a restore is the spawn here (nothing to load).
                at = time.monotonic() - self.started_at
                self.readiness.reached[Phase.VMM_STARTED] = at
                self.readiness.reached[Phase.STATE_RESTORED] = at
        except BaseException:
            await self.destroy()
            lifecycle.move(self, InstanceState.FAILED)
            raise
        lifecycle.move(self, InstanceState.STARTING)

    async def wait_ready(self) -> Readiness:
        return await lifecycle.wait_ready(
            self, backend="fake", markers=readiness.DEFAULT_MARKERS, skipped=SKIPPED,
            snapshot=self.snapshot,
        )  # fmt: skip

    async def destroy(self) -> None:
        # SIGTERM to the agent's group: the agent stops its CLIs' groups itself. Then SIGKILL
        # to the group whether or not the agent is still there (not process.kill(): that
        # skips the group once its leader is gone).
        if self.process.alive() and not await self.process.terminate(STOP_SECONDS, group=True):
            assert self.pid is not None
            proc.kill_group(self.pid)
            await self.process.wait_exit(STOP_SECONDS)
        # An agent that was killed (or crashed) never stopped its CLIs: they lead their own
        # groups, orphaned, found by their HOME under the state dir. A VM's end takes them.
        orphans = await _kill_orphans(self.dir.path)
        self.dir.remove()
        problems = lifecycle.leftovers("agent", self.process, self.dir.path)
        problems += [f"the agent's child pid {pid} still runs" for pid in orphans]
        lifecycle.stopped(self, "fake", problems)

    def exit_code(self) -> int | None:
        return self.process.exit_code()

    def console_tail(self, max_chars: int = 4000) -> str:
        return readiness.console_tail(self.console_path, max_chars)

    async def unit_state(self) -> UnitState | None:
        """The process as a unit would describe it (there is no systemd to ask)."""
        if self.pid is None:
            return None
        code = self.exit_code()
        active = ("active", "running") if code is None else ("failed", "exited")
        return UnitState(
            unit=f"{layout.AGENT_UNIT} (fake: host process {self.pid})",
            properties={
                "LoadState": "loaded", "UnitFileState": "enabled", "ActiveState": active[0],
                "SubState": active[1], "MainPID": str(self.pid),
                "ExecMainStatus": "" if code is None else str(code),
                "ExecStart": f"{{ argv[]={shlex.join(self.argv())} }}",
            },
            system_state="running",
        )  # fmt: skip


async def _kill_orphans(directory: Path) -> list[int]:
    """SIGKILL the groups of the processes naming ``directory``; those still there after
    ``STOP_SECONDS``."""
    pids = statedir.processes_naming(directory)
    for pid in pids:
        proc.kill_group(pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    end = time.monotonic() + STOP_SECONDS
    while left := statedir.processes_naming(directory):
        if time.monotonic() > end:
            break
        await asyncio.sleep(0.02)
    return left
