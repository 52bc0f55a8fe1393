"""The firecracker backend: the golden image as a Firecracker microVM, configured over its API.

One instance = one ``firecracker`` process in its own session, started as::

    [nsenter --net=/run/netns/remotecli-ID --]      (with network=True)
    unshare --mount --propagation private -- sh -c 'mount --bind "$1" "$2"; ...' \\
        remotecli-fc STATE VM_DIR firecracker --id remotecli-ID --api-sock STATE/api.sock \\
        --log-path STATE/firecracker.log --level Info --show-level

(``jailer=True``: through the jailer, ``fcjail.py``), configured through the
API (machine config, boot source, the root and config drives, vsock, optional
network interface) and started with ``InstanceStart``. Its state directory (``statedir.StateDir``)::

    <root>/<id>/
        instance.json     pid, firecracker path, netns, jail: what reap needs
        run/              token + agent.env (the source of config.disk)
        console.log       the guest's serial console (firecracker's stdout+stderr), from byte 0
        firecracker.log   Firecracker's own log (--log-path), kept apart from the console
        api.sock          Firecracker's API
        rootfs.ext4       this VM's copy-on-write copy of the golden disk (root drive)
        config.disk       a raw tar of run/ (second drive; the initramfs unpacks it into /run/agent)
        v.sock            the vsock device's host side (guest CID 3); the agent is port 8080

**Fixed paths for snapshots.** A snapshot records the drives' and the vsock's
host paths. Each firecracker sees its own state directory at the same
``VM_DIR`` (/run/remotecli/fc), bind-mounted in its private mount namespace,
and is given only ``VM_DIR/...`` paths for what the snapshot records; so a
clone restored from that snapshot opens *its own* disk copy and binds *its
own* vsock socket at the recorded path. With the jailer
(``FirecrackerBackend(jailer=True, ...)``) each VM's chroot plays that role:
its files live in the chroot and firecracker sees them at ``/...``
(``fcjail.py``); ``instance.json``, ``run/`` and ``console.log`` stay in the
state directory. Snapshot files: ``fcsnapshot.py``.

**After a restore** the guest's vsock transport is reset: connections open
when the snapshot was taken are gone and the host must re-dial (every probe
and client request opens a fresh connection: ``CONNECT <port>\\n`` → ``OK``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

from remotecli.errors import NotReady, VmError
from remotecli.images import layout
from remotecli.vmm import lifecycle, readiness, statedir
from remotecli.vmm.artifacts import golden_artifacts
from remotecli.vmm.base import (
    RESTORE_SKIPPED,
    ArtifactsFor,
    InstanceSpec,
    InstanceState,
    Phase,
    Readiness,
    UnitState,
    VmArtifacts,
)
from remotecli.vmm.endpoint import AgentEndpoint
from remotecli.vmm.firecracker import binaries as fcbin
from remotecli.vmm.firecracker import boot as fcboot
from remotecli.vmm.firecracker import jail as fcjail
from remotecli.vmm.firecracker import launch as fcproc
from remotecli.vmm.firecracker import snapshot as fcsnapshot
from remotecli.vmm.firecracker.api import ApiClient
from remotecli.vmm.firecracker.boot import BOOT_ARGS, boot_args
from remotecli.vmm.firecracker.jail import Jail, JailConfig
from remotecli.vmm.firecracker.netns import VmNetwork
from remotecli.vmm.firecracker.snapshot import (
    HasDirectory,
    SnapshotFiles,
    cow_copy,
    new_snapshot_dir,
)
from remotecli.vmm.vmmproc import VmmProcess

__all__ = ["FirecrackerBackend", "FirecrackerInstance", "JailConfig", "SnapshotFiles"]
__all__ += ["BOOT_ARGS", "boot_args"]

STATE_ROOT = Path("/run/remotecli/instances")
#: Where every firecracker process sees its own state directory (see the module docstring).
VM_DIR = Path("/run/remotecli/fc")
ID_PREFIX = "remotecli-"
GUEST_CID = 3
AGENT_PORT = layout.AGENT_PORT
GUEST_MAC = "06:00:ac:10:00:02"
MARKERS = dict(readiness.DEFAULT_MARKERS)
#: Log lines of Firecracker's own log carried in an error.
LOG_TAIL_LINES = 15
#: What a jailed firecracker sees as its VM directory (its chroot).
JAIL_VM_DIR = Path("/")


class FirecrackerBackend:
    name = "firecracker"
    isolation = "vm"
    supports_snapshots = True

    def __init__(
        self,
        state_root: Path = STATE_ROOT,
        *,
        artifacts: ArtifactsFor = golden_artifacts,
        firecracker: Path | None = None,
        network: bool = False,
        vm_dir: Path = VM_DIR,
        extra_boot_args: str = "",
        jailer: bool | Path = False,
        uid: int = 65534,
        gid: int = 65534,
        chroot_base: Path | None = None,
        cgroup_version: int | None = None,
        limits: bool = True,
    ) -> None:
        """``jailer=True`` (or the jailer's path) runs each VM under Firecracker's jailer
        as ``uid``:``gid`` in a chroot below ``chroot_base`` (``fcjail.py``), with memory
        and CPU limits (``limits``) in cgroup ``cgroup_version`` (None: the host's)."""
        self.state_root = state_root
        self.artifacts = artifacts
        self._firecracker = firecracker
        self.network = network
        self._jailer = jailer if isinstance(jailer, Path) else None
        self.jail: JailConfig | None = None
        if jailer:
            self.jail = JailConfig(
                uid, gid, chroot_base or fcjail.default_chroot_base(), cgroup_version, limits
            )
        #: What every firecracker sees as its VM directory: ``vm_dir``, or ``/`` (its chroot).
        self.vm_dir = JAIL_VM_DIR if self.jail else vm_dir
        #: e.g. ``earlyprintk=serial,ttyS0``: the banner reaches the console before the
        #: serial driver loads (tests on slow hosts); costs boot time on real ones.
        self.extra_boot_args = extra_boot_args

    @property
    def firecracker(self) -> Path:
        return self._firecracker or fcbin.require("firecracker")

    @property
    def exec_name(self) -> str:
        """The firecracker binary's name: the jailer names chroots after it."""
        binary = self._firecracker or fcbin.find("firecracker") or Path("firecracker")
        return binary.resolve().name

    @property
    def jailer(self) -> Path:
        return self._jailer or fcbin.require("jailer")

    def create(self, spec: InstanceSpec) -> FirecrackerInstance:
        statedir.check_id(spec.instance_id)
        return FirecrackerInstance(self, spec)

    def restore(
        self, spec: InstanceSpec, snapshot: Path | SnapshotFiles | HasDirectory
    ) -> FirecrackerInstance:
        """An instance whose ``start()`` loads ``snapshot`` (its own copy of the snapshot's disk).

        ``snapshot`` is a snapshot directory or anything with a ``directory``
        (``base.Snapshot``, ``SnapshotFiles``).
        """
        if not isinstance(snapshot, SnapshotFiles):
            snapshot = SnapshotFiles.load(
                snapshot if isinstance(snapshot, Path) else snapshot.directory
            )
        instance = self.create(spec)
        instance.snapshot = snapshot
        return instance

    async def create_snapshot(self, spec: InstanceSpec, directory: Path) -> SnapshotFiles:
        """Boot ``spec`` cold to AGENT_READY, save it into ``directory``, destroy it."""
        instance = self.create(spec)
        return await lifecycle.saved_cold_boot(
            instance, lambda phases: instance.create_snapshot(directory, boot_phases=phases)
        )

    async def list_running(self) -> list[str]:
        """Ids of instances found on the host: running, or left behind and needing ``reap``
        (with the jailer also chroots whose state directory is gone, e.g. after a reboot)."""
        found = {d.instance_id for d in statedir.scan(self.state_root)}
        if self.jail is not None:
            found |= fcjail.jailed_ids(self.jail, self.exec_name, ID_PREFIX)
        return sorted(found)

    async def reap(self, instance_id: str) -> None:
        """Destroy an instance we have no handle for (after a controller restart)."""
        spec, meta = lifecycle.adopted(self.state_root, instance_id)
        instance = FirecrackerInstance(self, spec)
        instance.process.pid = meta.get("pid")
        if meta.get("netns"):
            instance.network = VmNetwork(str(meta["netns"]))
        if meta.get("jail"):
            instance.jail = Jail.from_meta(meta["jail"], instance.vm_id)
        elif instance.jail is not None:  # a chroot without a state dir (/run lost in a reboot)
            instance.jail.plan_cgroups(spec.memory_mib, spec.vcpus)
        await instance.destroy()


class FirecrackerInstance:
    def __init__(self, backend: FirecrackerBackend, spec: InstanceSpec) -> None:
        self.backend = backend
        self.spec = spec
        self.state = InstanceState.CREATED
        self.readiness = Readiness()
        self.dir = statedir.StateDir(backend.state_root / spec.instance_id)
        self.vm_id = ID_PREFIX + spec.instance_id
        self.console_path = self.dir.console
        self.jail: Jail | None = None
        if backend.jail is not None:
            self.jail = Jail(backend.jail, self.vm_id, backend.exec_name)
        #: Where this VM's files are on the host: the state dir, or the jail's chroot.
        self.host_dir = self.jail.root if self.jail else self.dir.path
        self.log_path = self.host_dir / "firecracker.log"
        self.api = ApiClient(self.host_dir / "api.sock")
        #: The vsock device's host socket; the agent listens on guest port ``agent_port``.
        self.vsock_uds = self.host_dir / "v.sock"
        self.agent_port = AGENT_PORT
        self.guest_cid = GUEST_CID
        self.agent_endpoint = AgentEndpoint.vsock(self.vsock_uds, self.agent_port)
        self.network: VmNetwork | None = VmNetwork(self.vm_id) if backend.network else None
        self.process = VmmProcess(self.vm_id)
        self.paused = False
        #: Set by ``backend.restore``: ``start()`` loads it instead of booting.
        self.snapshot: SnapshotFiles | None = None
        self.started_at = 0.0
        #: Seconds per start step (disk copy, API up, configure, InstanceStart or load).
        self.timings: dict[str, float] = {}
        #: What firecracker is given to read, host paths or their places in the jail:
        #: (kernel, initrd) for a boot, (vmstate, memory) for a restore.
        self._inputs: tuple[Path, Path | None] = (Path(), None)
        self._skipped: dict[Phase, str] = {}

    def _restored(self) -> None:
        """Phases after a snapshot load: the guest wakes up, it does not boot."""
        self.readiness.reached[Phase.STATE_RESTORED] = round(time.monotonic() - self.started_at, 3)
        self._skipped = dict(RESTORE_SKIPPED)
        self.readiness.skipped.update(self._skipped)

    @property
    def network_on(self) -> bool:
        return self.network is not None

    def seen(self, name: str) -> Path:
        """The path firecracker is given for a file of this VM (stable across clones)."""
        return self.backend.vm_dir / name

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Boot from the image's artifacts, or (made by ``restore``) resume the snapshot."""
        snapshot = self.snapshot
        lifecycle.begin_start(self)
        artifacts = (
            None
            if snapshot is not None
            else fcboot.checked_artifacts(await self.backend.artifacts(self.spec))
        )
        if snapshot is not None:
            snapshot.check_vm_dir(self.backend.vm_dir)
        self.dir.create(self.spec.agent_token, self.spec.agent_env)
        try:
            await self._prepare(artifacts, snapshot)
            await self._spawn()
            await self._wait_api()
            t = time.monotonic()
            if snapshot is None:
                assert artifacts is not None
                await self._configure(artifacts)
                self.timings["configure"] = time.monotonic() - t
                t = time.monotonic()
                await self.api.instance_start()
                self.timings["instance_start"] = time.monotonic() - t
            else:
                vmstate, memory = self._inputs
                assert memory is not None
                await self.api.snapshot_load(vmstate, memory, resume=True)
                self.timings["snapshot_load"] = time.monotonic() - t
                self._restored()
        except BaseException as exc:
            evidence = await lifecycle.abandon_start(self, exc, self._evidence)
            if evidence and isinstance(exc, VmError):
                # Same type (callers match on FirecrackerApiError), with the evidence added.
                exc.message = f"{exc.message}\n{evidence}"
                exc.args = (exc.message,)
            raise
        lifecycle.move(self, InstanceState.STARTING)

    async def _prepare(self, artifacts: VmArtifacts | None, snapshot: SnapshotFiles | None) -> None:
        d = self.host_dir
        if snapshot is not None and bool(snapshot.meta.get("network")) != bool(self.network):
            self.network = VmNetwork(self.vm_id) if snapshot.meta.get("network") else None
        if self.jail is not None:
            self.jail.plan_cgroups(self.spec.memory_mib, self.spec.vcpus)
        self._write_meta()  # before anything exists that reap would have to remove
        if artifacts is not None:
            names, self._inputs = ("vmlinux", "initrd.img"), (artifacts.vmlinux, artifacts.initrd)
        else:
            assert snapshot is not None
            names = (SnapshotFiles.VMSTATE, SnapshotFiles.MEMORY)
            self._inputs = (snapshot.file(names[0]), snapshot.file(names[1]))
        if self.jail is not None:
            t = time.monotonic()
            self.jail.create()
            self._inputs = self.jail.stage(self._inputs, names)
            self.timings["jail_files"] = time.monotonic() - t
        t = time.monotonic()
        disk = (
            snapshot.file(SnapshotFiles.DISK) if snapshot else artifacts.disk if artifacts else None
        )
        assert disk is not None
        await cow_copy(disk, d / "rootfs.ext4")
        self.timings["disk_copy"] = time.monotonic() - t
        fcboot.write_config_disk(d / "config.disk", self.spec.agent_token, self.spec.agent_env)
        if self.jail is not None:
            self.jail.own(d / "rootfs.ext4")
            self.jail.own(d / "config.disk")
        if self.network is not None:
            await self.network.create()

    def launch_argv(self) -> list[str]:
        if self.jail is not None:
            netns = self.network.handle if self.network else None
            fc_args = [
                "--api-sock", str(self.seen("api.sock")), "--log-path",
                str(self.seen("firecracker.log")), "--level", "Info", "--show-level",
            ]  # fmt: skip
            return self.jail.argv(self.backend.jailer, self.backend.firecracker, netns, fc_args)
        fc = [
            str(self.backend.firecracker), "--id", self.vm_id, "--api-sock", str(self.api.socket),
            "--log-path", str(self.log_path), "--level", "Info", "--show-level",
        ]  # fmt: skip
        netns = self.network.handle if self.network else None
        return fcproc.bound_vm_dir_argv(self.dir.path, self.backend.vm_dir, netns, fc)

    async def _spawn(self) -> None:
        if self.jail is None:
            self.log_path.touch(mode=0o600)
            self.backend.vm_dir.mkdir(parents=True, exist_ok=True)  # the bind mount's target
        self.started_at = time.monotonic()
        await self.process.spawn(self.launch_argv(), self.console_path)
        self._write_meta()

    async def _wait_api(self) -> None:
        limit = self.spec.deadlines[Phase.VMM_STARTED]
        try:
            waited = await self.api.wait_until_up(limit, alive=self.process.alive)
        except VmError as exc:
            await self.process.wait_exit(1.0)
            waited = time.monotonic() - self.started_at
            raise self._not_ready(Phase.VMM_STARTED, waited, str(exc)) from None
        self.timings["api_up"] = waited
        self.readiness.reached[Phase.VMM_STARTED] = round(time.monotonic() - self.started_at, 3)

    async def _configure(self, artifacts: VmArtifacts) -> None:
        api = self.api
        await api.machine_config(vcpus=self.spec.vcpus, memory_mib=self.spec.memory_mib)
        args = boot_args(f"{artifacts.cmdline} {self.backend.extra_boot_args}")
        await api.boot_source(*self._inputs[:1], args, self._inputs[1])
        await api.drive("rootfs", self.seen("rootfs.ext4"), root=True)
        await api.drive("config", self.seen("config.disk"), read_only=True)
        await api.vsock(self.seen("v.sock"), self.guest_cid)
        if self.network is not None:
            await api.network_interface("eth0", self.network.tap, GUEST_MAC)

    async def wait_ready(self) -> Readiness:
        """Cold boot: the console's markers then /health; restore: /health over vsock + the
        clone's own identity (restore.py)."""
        try:
            return await lifecycle.wait_ready(
                self, backend="firecracker", markers=MARKERS, skipped=self._skipped,
                snapshot=self.snapshot,
            )  # fmt: skip
        except NotReady as exc:
            raise _with_hint(exc, self._evidence()) from None

    # -- snapshots --------------------------------------------------------------

    async def pause(self) -> None:
        await self.api.pause()
        self.paused = True

    async def resume(self) -> None:
        await self.api.resume()
        self.paused = False

    async def create_snapshot(
        self, directory: Path, *, boot_phases: Mapping[str, float] | None = None
    ) -> SnapshotFiles:
        """Pause (if running) and write a full snapshot + the disk it needs into ``directory``.

        The VM stays paused: ``resume()`` it or ``destroy()`` it.
        """
        if self.state not in (InstanceState.STARTING, InstanceState.READY):
            raise VmError(f"instance {self.spec.instance_id} is {self.state}: nothing to snapshot")
        new_snapshot_dir(directory)
        if not self.paused:
            await self.pause()
        return await fcsnapshot.save(self, directory, boot_phases or self.readiness.durations())

    # -- teardown ----------------------------------------------------------------

    async def destroy(self) -> None:
        """Kill firecracker (the disk is thrown away: nothing to shut down cleanly), verify."""
        await self.process.kill()
        if self.network is not None:
            await self.network.delete()
        if self.jail is not None:
            await self.jail.remove()
        self.dir.remove()
        lifecycle.stopped(self, "firecracker", self._leftovers())

    def _leftovers(self) -> list[str]:
        problems = lifecycle.leftovers("firecracker", self.process, self.dir.path)
        if self.network is not None and self.network.exists():
            problems.append(f"network namespace {self.network.netns}")
        problems += [f"mount {m}" for m in statedir.mounts_under(self.dir.path)]
        if self.jail is not None:
            problems += self.jail.leftovers()
        else:
            problems += [f"mount {m}" for m in statedir.mounts_under(self.backend.vm_dir)]
        return problems

    # -- evidence ------------------------------------------------------------------

    def exit_code(self) -> int | None:
        return self.process.exit_code()

    def console_tail(self, max_chars: int = 4000) -> str:
        return readiness.console_tail(self.console_path, max_chars)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The end of Firecracker's own log (API requests, KVM exits, its exit reason)."""
        return readiness.console_tail(self.log_path, max_lines=lines)

    async def unit_state(self) -> UnitState | None:
        return None  # no way into the guest but the agent itself

    def _evidence(self) -> str:
        log = self.log_tail()
        return lifecycle.evidence(
            self, "firecracker", f"Firecracker's log ({self.log_path}):\n{log}" if log else ""
        )

    def _not_ready(self, phase: Phase, waited: float, why: str) -> NotReady:
        return NotReady(
            instance_id=self.spec.instance_id, backend="firecracker",
            last_phase=self.readiness.last.value if self.readiness.last else None,
            waiting_for=phase.value, deadline=round(waited, 3),
            phases=self.readiness.durations(), skipped={},
            console_tail=self.console_tail(), unit_state=None,
            hint=f"{why}\n{self._evidence()}", cause="vmm_failed",
        )  # fmt: skip

    # -- internals -------------------------------------------------------------------

    def _write_meta(self) -> None:
        self.dir.write_meta({
            "backend": "firecracker", "vm_id": self.vm_id, "pid": self.process.pid,
            "firecracker": str(self.backend._firecracker or ""), "vm_dir": str(self.backend.vm_dir),
            "netns": self.network.netns if self.network else None,
            "vsock_uds": str(self.vsock_uds), "agent_port": self.agent_port,
            "jail": self.jail.to_meta() if self.jail else None,
        })  # fmt: skip


def _with_hint(exc: NotReady, evidence: str) -> NotReady:
    """``exc`` with Firecracker's own evidence (exit code, its log tail) added to the hint."""
    return NotReady(
        instance_id=exc.instance_id, backend=exc.backend, last_phase=exc.last_phase,
        waiting_for=exc.waiting_for, deadline=exc.deadline, phases=exc.phases,
        skipped=exc.skipped, console_tail=exc.console_tail, unit_state=exc.unit_state,
        hint=f"{exc.hint}\n{evidence}" if evidence else exc.hint, cause=exc.cause,
    )  # fmt: skip
