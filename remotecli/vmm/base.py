"""One interface for every way we run the golden image: VM, container, in-process fake.

Implementations sit beside this file: ``nspawn.py`` (systemd-nspawn
containers), ``fake.py`` (in-process, for control-plane tests); later
``firecracker.py`` and ``qemu.py``. The controller only sees ``Backend`` and
``Instance``.

An instance's life: ``backend.create(spec)`` → ``await instance.start()`` →
``await instance.wait_ready()`` (phased, raising ``NotReady`` with evidence)
→ talk to the agent through ``instance.agent_endpoint`` → ``await
instance.destroy()`` (idempotent, verified: nothing left behind).
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from remotecli.states import State, transitions

if TYPE_CHECKING:
    from remotecli.vmm.endpoint import AgentEndpoint


class Phase(enum.StrEnum):
    """Readiness phases, in order. Each is timed; a container skips KERNEL_BOOTED.

    A cold boot goes through ``PHASES``; a restore from a golden snapshot
    through ``RESTORE_PHASES`` (its guest never boots: it wakes up).
    """

    VMM_STARTED = "VMM_STARTED"  # the VMM / container manager process runs
    #: Restores only: the snapshot's memory and devices are loaded and the guest runs.
    STATE_RESTORED = "STATE_RESTORED"
    KERNEL_BOOTED = "KERNEL_BOOTED"  # the guest kernel printed its banner
    INIT_STARTED = "INIT_STARTED"  # systemd runs as PID 1
    AGENT_LISTENING = "AGENT_LISTENING"  # the agent printed its listening marker
    AGENT_READY = "AGENT_READY"  # GET /health answered 200 with the seed's JSON


#: A cold boot's phases, in order.
PHASES: tuple[Phase, ...] = tuple(p for p in Phase if p is not Phase.STATE_RESTORED)
#: A restore's phases; AGENT_READY includes the clone's new identity (identity refresh).
RESTORE_PHASES: tuple[Phase, ...] = (Phase.VMM_STARTED, Phase.STATE_RESTORED, Phase.AGENT_READY)
#: What a restore skips, and why.
RESTORE_SKIPPED: Mapping[Phase, str] = {
    p: "restored from a golden snapshot: the guest wakes up instead of booting"
    for p in PHASES
    if p not in RESTORE_PHASES
}


@dataclass(frozen=True)
class Deadlines:
    """Seconds allowed for each phase, counted from the previous phase."""

    per_phase: Mapping[Phase, float] = field(
        default_factory=lambda: {
            Phase.VMM_STARTED: 5.0,
            Phase.STATE_RESTORED: 10.0,
            Phase.KERNEL_BOOTED: 30.0,
            Phase.INIT_STARTED: 30.0,
            Phase.AGENT_LISTENING: 30.0,
            Phase.AGENT_READY: 5.0,
        }
    )

    def __getitem__(self, phase: Phase) -> float:
        if phase not in self.per_phase and phase is Phase.STATE_RESTORED:
            return 10.0  # deadlines written before restores existed
        return self.per_phase[phase]

    def scaled(self, factor: float) -> Deadlines:
        """Slow hosts (software emulation) need longer; tests may want shorter."""
        return Deadlines({p: s * factor for p, s in self.per_phase.items()})


@dataclass
class Readiness:
    """What happened on the way to ready: when each phase was reached."""

    #: Seconds from start to reaching each phase.
    reached: dict[Phase, float] = field(default_factory=dict)
    #: Phases this backend does not have, with the reason.
    skipped: dict[Phase, str] = field(default_factory=dict)

    @property
    def last(self) -> Phase | None:
        done = [p for p in Phase if p in self.reached]
        return done[-1] if done else None

    def durations(self) -> dict[str, float]:
        """Seconds spent in each phase (from the previous reached phase)."""
        out: dict[str, float] = {}
        previous = 0.0
        for phase in Phase:
            if phase in self.reached:
                out[phase.value] = round(self.reached[phase] - previous, 3)
                previous = self.reached[phase]
        return out


@dataclass(frozen=True)
class UnitState:
    """What systemd inside the instance says about the agent unit (the evidence a hint reads).

    Each field is the raw text of one query so a human sees exactly what the
    machine saw; ``properties`` is ``systemctl show`` parsed into a dict.
    """

    unit: str
    #: ``systemctl show UNIT -p ...`` (LoadState, ActiveState, UnitFileState, After, ...).
    properties: Mapping[str, str]
    #: ``systemctl list-jobs --after``: pending jobs and the jobs each one is blocking.
    jobs: str = ""
    #: ``systemctl status UNIT`` with its last journal lines.
    status: str = ""
    #: TCP listeners inside the instance, one per line, with the owning process and unit.
    listeners: str = ""
    #: ``systemctl is-system-running``.
    system_state: str = ""

    def render(self) -> str:
        """The text form carried by ``NotReady.unit_state`` (API, logs, dashboard)."""
        parts = [f"$ systemctl is-system-running\n{self.system_state}".rstrip()]
        if self.status:
            parts.append(f"$ systemctl status {self.unit}\n{self.status.rstrip()}")
        shown = "\n".join(f"{k}={v}" for k, v in self.properties.items())
        parts.append(f"$ systemctl show {self.unit}\n{shown}")
        parts.append(f"$ systemctl list-jobs --after\n{self.jobs.rstrip() or '(none)'}")
        if self.listeners:
            parts.append(f"TCP listeners:\n{self.listeners.rstrip()}")
        return "\n\n".join(parts)


@dataclass(frozen=True)
class InstanceSpec:
    """What to run.

    ``image`` is the golden rootfs *directory* (``Image.rootfs`` from
    ``images/build.py``); VM backends will take their kernel and disk from
    the image directory beside it.
    """

    image: Path
    #: Stable id for names (container machine name, state dir); a-z0-9-.
    instance_id: str
    #: The VM token the agent requires; written to the instance's run dir.
    agent_token: str
    role: str = "auth"
    #: Extra read-only layers over the golden rootfs, lowest first (tests use
    #: them to build faulty variants; a user image could add tools).
    layers: tuple[Path, ...] = ()
    #: Extra ``KEY=value`` lines for the agent's environment file.
    agent_env: Mapping[str, str] = field(default_factory=dict)
    memory_mib: int = 512
    vcpus: int = 1
    deadlines: Deadlines = field(default_factory=Deadlines)


class VmArtifacts(Protocol):
    """What a VM backend boots: the kernel, the initramfs, the root disk, the command line.

    Described once, here; ``images.vm.VmArtifacts`` (one built set of the
    golden image) is what the backends get in production, through the loader
    the runtime hands them (``vmm/artifacts.py``). QEMU boots ``vmlinuz`` (a
    bzImage), Firecracker the ELF ``vmlinux``; neither ever writes ``disk``.
    """

    @property
    def directory(self) -> Path: ...
    @property
    def disk(self) -> Path: ...
    @property
    def vmlinuz(self) -> Path: ...
    @property
    def vmlinux(self) -> Path: ...
    @property
    def initrd(self) -> Path | None:
        """None: the kernel boots without an initramfs (Firecracker can; QEMU refuses)."""
        ...

    @property
    def cmdline(self) -> str: ...
    @property
    def kernel_version(self) -> str:
        """``uname -r`` of the guest kernel."""
        ...


#: A backend's way to its VM artifacts: the set to boot for an instance.
ArtifactsFor = Callable[[InstanceSpec], Awaitable[VmArtifacts]]


class InstanceState(State):
    CREATED = "created"
    STARTING = "starting"
    READY = "ready"
    FAILED = "failed"
    STOPPED = "stopped"


#: ``vmm/lifecycle.py`` makes every move: a start counts as FAILED from ``begin_start``
#: until its process runs (then STARTING), a half-done start is destroyed (STOPPED) and
#: then marked FAILED, and ``destroy`` (idempotent) ends in STOPPED from anywhere.
INSTANCE_TRANSITIONS = transitions(
    InstanceState,
    {
        InstanceState.CREATED: {
            InstanceState.FAILED,
            InstanceState.STARTING,
            InstanceState.STOPPED,
        },
        InstanceState.FAILED: {InstanceState.STARTING, InstanceState.STOPPED},
        InstanceState.STARTING: {InstanceState.READY, InstanceState.FAILED, InstanceState.STOPPED},
        InstanceState.READY: {InstanceState.STOPPED},
        InstanceState.STOPPED: {InstanceState.FAILED},
    },
    subject="instance",
)


class Instance(Protocol):
    spec: InstanceSpec
    state: InstanceState
    readiness: Readiness
    #: Where the host reaches the agent: a Unix socket (containers), TCP
    #: (QEMU's hostfwd) or Firecracker's vsock socket (see endpoint.py).
    agent_endpoint: AgentEndpoint
    #: Host path of the console log, captured from the first byte.
    console_path: Path

    async def start(self) -> None: ...

    async def wait_ready(self) -> Readiness:
        """Wait phase by phase; raise ``NotReady`` with the evidence on a miss."""
        ...

    async def destroy(self) -> None:
        """Stop and remove everything this instance made. Idempotent."""
        ...

    def console_tail(self, max_chars: int = 4000) -> str: ...

    def exit_code(self) -> int | None:
        """The VMM process's exit code once it exited (None: it runs, or nobody knows)."""
        ...

    async def unit_state(self) -> UnitState | None:
        """The agent unit's state as systemd reports it, when the backend can ask."""
        ...


class Backend(Protocol):
    name: str
    #: "vm" (own kernel), "container" (shared kernel), "fake" (no isolation).
    isolation: str
    supports_snapshots: bool

    def create(self, spec: InstanceSpec) -> Instance: ...

    async def list_running(self) -> list[str]:
        """Instance ids this backend finds running on the host (for reconciliation)."""
        ...

    async def reap(self, instance_id: str) -> None:
        """Destroy an instance found running without a handle (after a restart)."""
        ...


@dataclass(frozen=True)
class Snapshot:
    """A golden snapshot: the image booted once to AGENT_READY, paused and saved.

    ``directory`` holds the backend's files (memory, device state, the disk
    as it was) and ``golden.json`` (mode 0600: it carries the golden
    token). Clones restore from it; each gets its own copy-on-write disk and,
    before use, its own identity (``vmm/restore.py``).
    """

    backend: str
    directory: Path
    #: The rootfs directory the golden VM booted (the image the clones run).
    image: Path
    #: The token the snapshotted agent accepts until a clone's identity is refreshed.
    golden_token: str
    #: Seconds per phase of the golden VM's cold boot (the cost a restore saves).
    boot_phases: Mapping[str, float] = field(default_factory=dict)
    #: Backend-specific facts (file names, the VMM's version, the memory size).
    meta: Mapping[str, Any] = field(default_factory=dict)


class SnapshotBackend(Backend, Protocol):
    """A backend that can save a running instance and start clones of it."""

    async def create_snapshot(self, spec: InstanceSpec, directory: Path) -> Snapshot:
        """Boot ``spec`` cold to AGENT_READY, save it into ``directory`` (new), destroy it.

        ``spec.agent_token`` becomes the snapshot's golden token.
        """
        ...

    def restore(self, spec: InstanceSpec, snapshot: Snapshot) -> Instance:
        """An instance that ``start()`` restores from ``snapshot``; ``wait_ready()`` follows
        ``RESTORE_PHASES`` and hands the agent ``spec.agent_token`` (identity refresh)."""
        ...
