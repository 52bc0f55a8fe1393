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
from remotecli.vmm import readiness, restore, statedir
from remotecli.vmm.base import (
    InstanceSpec,
    InstanceState,
    Phase,
    Readiness,
    Snapshot,
    UnitState,
)
from remotecli.vmm.endpoint import AgentEndpoint

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
        instance = self.create(spec)
        try:
            await instance.start()
            ready = await instance.wait_ready()
        finally:
            await instance.destroy()
        return Snapshot(
            backend=self.name, directory=directory, image=spec.image,
            golden_token=spec.agent_token, boot_phases=ready.durations(),
            meta={"agent_env": dict(spec.agent_env), "kind": "fake: no memory was saved"},
        )  # fmt: skip

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
        statedir.check_id(instance_id)
        directory = statedir.StateDir(self.state_root / instance_id)
        spec = InstanceSpec(image=Path("/"), instance_id=instance_id, agent_token="")
        instance = FakeInstance(self, spec, FakeFault.NONE)
        instance.pid = directory.read_meta().get("pid")
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
        self.pid: int | None = None
        self.started_at = 0.0
        #: Set by ``FakeBackend.restore``: this instance wakes up holding the golden token.
        self.snapshot: Snapshot | None = None
        self._proc: asyncio.subprocess.Process | None = None

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
        if self.state is not InstanceState.CREATED:
            raise VmError(f"instance {self.spec.instance_id} was already started")
        self.state = InstanceState.FAILED  # until the agent runs
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
            with self.console_path.open("ab") as console:
                self.started_at = time.monotonic()
                self._proc = await asyncio.create_subprocess_exec(
                    *self.argv(), cwd=PACKAGE_PARENT, env=env, stdin=asyncio.subprocess.DEVNULL,
                    stdout=console, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
                )  # fmt: skip
            self.pid = self._proc.pid
            self.dir.write_meta({"backend": "fake", "pid": self.pid, "fault": self.fault.value})
            if self.snapshot is not None:
                # The VMM's part of a restore is the spawn here (nothing to load).
                at = time.monotonic() - self.started_at
                self.readiness.reached[Phase.VMM_STARTED] = at
                self.readiness.reached[Phase.STATE_RESTORED] = at
        except BaseException:
            await self.destroy()
            self.state = InstanceState.FAILED
            raise
        self.state = InstanceState.STARTING

    async def wait_ready(self) -> Readiness:
        if self.state is not InstanceState.STARTING:
            raise VmError(f"instance {self.spec.instance_id} is {self.state}, not starting")
        try:
            if self.snapshot is not None:
                await restore.wait_restored(
                    self, backend="fake", started_at=self.started_at, readiness=self.readiness,
                    snapshot=self.snapshot,
                )  # fmt: skip
            else:
                await readiness.wait_ready(
                    self, backend="fake", started_at=self.started_at,
                    markers=readiness.DEFAULT_MARKERS, skipped=SKIPPED, readiness=self.readiness,
                )  # fmt: skip
        except BaseException:
            self.state = InstanceState.FAILED
            raise
        self.state = InstanceState.READY
        return self.readiness

    async def destroy(self) -> None:
        if self._alive():
            assert self.pid is not None
            proc.kill_group(self.pid, signal.SIGTERM)  # the agent stops its CLIs' groups itself
            if not await self._wait_exit(STOP_SECONDS):
                proc.kill_group(self.pid)
                await self._wait_exit(STOP_SECONDS)
        self.dir.remove()
        self.state = InstanceState.STOPPED
        problems = []
        if self._alive():
            problems.append(f"agent pid {self.pid} still runs")
        if self.dir.path.exists():
            problems.append(f"state directory {self.dir.path}")
        if problems:
            raise VmError(
                f"destroying fake instance {self.spec.instance_id} left: " + "; ".join(problems)
            )

    def exit_code(self) -> int | None:
        if self._proc is not None:
            return self._proc.returncode
        return None if self._alive() else -1

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

    def _alive(self) -> bool:
        if self._proc is not None:
            return self._proc.returncode is None
        return statedir.pid_alive(self.pid, str(self.dir.path))

    async def _wait_exit(self, timeout: float) -> bool:
        if self._proc is not None:
            try:
                await asyncio.wait_for(self._proc.wait(), timeout)
            except TimeoutError:
                return False
            return True
        return await statedir.wait_gone(self.pid, str(self.dir.path), timeout)
