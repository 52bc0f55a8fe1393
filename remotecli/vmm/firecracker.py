"""The firecracker backend: the golden image as a Firecracker microVM, configured over its API.

One instance = one ``firecracker`` process in its own session, started as::

    [nsenter --net=/run/netns/remotecli-ID --]      (with network=True)
    unshare --mount --propagation private -- sh -c 'mount --bind "$1" "$2"; ...' \\
        remotecli-fc STATE VM_DIR firecracker --id remotecli-ID --api-sock STATE/api.sock \\
        --log-path STATE/firecracker.log --level Info --show-level

then configured through the API (machine config, boot source, the root and
config drives, vsock, optional network interface) and started with
``InstanceStart``. Its state directory (``statedir.StateDir``)::

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
own* vsock socket at the recorded path. With the jailer the chroot gives the
same property (``fcjail.py``).

**After a restore** the guest's vsock transport is reset: connections open
when the snapshot was taken are gone and the host must re-dial (every probe
and client request opens a fresh connection: ``CONNECT <port>\\n`` → ``OK``).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import shutil
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

from remotecli import proc
from remotecli.errors import NotReady, VmError
from remotecli.images import layout, store
from remotecli.vmm import fcbin, readiness, restore, statedir
from remotecli.vmm.base import (
    RESTORE_SKIPPED,
    InstanceSpec,
    InstanceState,
    Phase,
    Readiness,
    UnitState,
)
from remotecli.vmm.endpoint import AgentEndpoint
from remotecli.vmm.fcapi import ApiClient
from remotecli.vmm.netns import VmNetwork

STATE_ROOT = Path("/run/remotecli/instances")
#: Where every firecracker process sees its own state directory (see the module docstring).
VM_DIR = Path("/run/remotecli/fc")
ID_PREFIX = "remotecli-"
GUEST_CID = 3
AGENT_PORT = layout.AGENT_PORT
#: Appended to the image's cmdline unless it sets them: serial console, reboot = exit,
#: panic = reboot after 1 s (a dead guest ends the process: evidence, not a hang),
#: no PCI probing (Firecracker has virtio-mmio only; saves ~100 ms of boot).
BOOT_ARGS = ("console=ttyS0", "reboot=k", "panic=1", "pci=off")
GUEST_MAC = "06:00:ac:10:00:02"
MARKERS = dict(readiness.DEFAULT_MARKERS)
SNAPSHOT_META = "snapshot.json"
SNAPSHOT_FORMAT = 1
#: Log lines of Firecracker's own log carried in an error.
LOG_TAIL_LINES = 15
COPY_TIMEOUT = 300.0

# $1 the state dir, $2 VM_DIR, then the command. Positional: no path is parsed by sh.
LAUNCHER = """set -eu
mount --bind "$1" "$2"
shift 2
exec "$@"
"""


class VmArtifacts(Protocol):
    """What a VM boots (``images/vm.py``'s ``VmArtifacts`` has these and more)."""

    @property
    def disk(self) -> Path: ...
    @property
    def vmlinux(self) -> Path: ...
    @property
    def initrd(self) -> Path | None: ...
    @property
    def cmdline(self) -> str: ...


ArtifactsFor = Callable[[InstanceSpec], Awaitable[VmArtifacts]]


async def golden_artifacts(spec: InstanceSpec) -> VmArtifacts:
    """The golden image's VM artifacts (built by ``images/vm.py`` on first use)."""
    vm = importlib.import_module("remotecli.images.vm")
    image = store.load_image(spec.image.parent)
    artifacts: VmArtifacts = await vm.ensure_vm_artifacts(image)
    return artifacts


def boot_args(cmdline: str) -> str:
    """The image's cmdline plus ``BOOT_ARGS`` it does not already set (by key)."""
    words = cmdline.split()
    keys = {w.split("=", 1)[0] for w in words}
    return " ".join([*words, *(a for a in BOOT_ARGS if a.split("=", 1)[0] not in keys)])


def write_config_disk(path: Path, token: str, env: Mapping[str, str]) -> None:
    """The config drive (``images/configdisk.py``): the initramfs unpacks it into /run/agent."""
    configdisk = importlib.import_module("remotecli.images.configdisk")
    configdisk.write_config_disk(path, token=token, env=dict(env))


async def cow_copy(src: Path, dst: Path) -> None:
    """A copy-on-write copy where the filesystem can (XFS, btrfs), else a sparse full copy.

    The copy is made 0600 (the golden artifacts are read-only; cp keeps their mode).
    """
    await proc.run(
        ["cp", "--reflink=auto", "--sparse=always", "--", str(src), str(dst)],
        timeout=COPY_TIMEOUT,
    )
    os.chmod(dst, 0o600)


class _HasDirectory(Protocol):
    @property
    def directory(self) -> Path: ...


@dataclass(frozen=True)
class SnapshotFiles:
    """A full Firecracker snapshot directory (same fields as ``base.Snapshot``)::

    <directory>/
        snapshot.json   format, paths recorded in the VM state, golden token (0600)
        vmstate         Firecracker's device + vCPU state (``snapshot_path``)
        memory          guest memory, memory_mib MiB; clones map it privately
        disk.ext4       the root disk as it was at the pause (clones copy it)
        config.disk     the config drive the guest had (its path is recorded)
    """

    backend: str
    directory: Path
    image: Path
    golden_token: str
    boot_phases: Mapping[str, float]
    meta: Mapping[str, Any]

    VMSTATE: ClassVar[str] = "vmstate"
    MEMORY: ClassVar[str] = "memory"
    DISK: ClassVar[str] = "disk.ext4"
    CONFIG: ClassVar[str] = "config.disk"

    @classmethod
    def load(cls, directory: Path) -> SnapshotFiles:
        try:
            meta = json.loads((directory / SNAPSHOT_META).read_text())
        except (OSError, ValueError) as exc:
            raise VmError(f"{directory} is not a Firecracker snapshot: {exc}") from exc
        if meta.get("format") != SNAPSHOT_FORMAT or meta.get("backend") != "firecracker":
            raise VmError(
                f"{directory / SNAPSHOT_META}: not a format-{SNAPSHOT_FORMAT} Firecracker snapshot"
            )
        for name in (cls.VMSTATE, cls.MEMORY, cls.DISK, cls.CONFIG):
            if not (directory / name).is_file():
                raise VmError(f"snapshot {directory} lacks {name}")
        return cls(
            "firecracker", directory, Path(meta.get("image") or "/"),
            str(meta.get("golden_token") or ""), dict(meta.get("boot_phases") or {}), meta,
        )  # fmt: skip

    def file(self, name: str) -> Path:
        return self.directory / name


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
    ) -> None:
        self.state_root = state_root
        self.artifacts = artifacts
        self._firecracker = firecracker
        self.network = network
        self.vm_dir = vm_dir
        #: e.g. ``earlyprintk=serial,ttyS0``: the banner reaches the console before the
        #: serial driver loads (tests on slow hosts); costs boot time on real ones.
        self.extra_boot_args = extra_boot_args

    @property
    def firecracker(self) -> Path:
        return self._firecracker or fcbin.require("firecracker")

    def create(self, spec: InstanceSpec) -> FirecrackerInstance:
        statedir.check_id(spec.instance_id)
        return FirecrackerInstance(self, spec)

    def restore(
        self, spec: InstanceSpec, snapshot: Path | SnapshotFiles | _HasDirectory
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
        try:
            await instance.start()
            phases = (await instance.wait_ready()).durations()
            return await instance.create_snapshot(directory, boot_phases=phases)
        finally:
            await instance.destroy()

    async def list_running(self) -> list[str]:
        """Ids of instances found on the host: running, or left behind and needing ``reap``."""
        return [d.instance_id for d in statedir.scan(self.state_root)]

    async def reap(self, instance_id: str) -> None:
        """Destroy an instance we have no handle for (after a controller restart)."""
        statedir.check_id(instance_id)
        meta = statedir.StateDir(self.state_root / instance_id).read_meta()
        spec = InstanceSpec(image=Path("/"), instance_id=instance_id, agent_token="")
        instance = FirecrackerInstance(self, spec)
        instance.pid = meta.get("pid")
        if meta.get("netns"):
            instance.network = VmNetwork(str(meta["netns"]))
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
        self.log_path = self.dir.path / "firecracker.log"
        self.api = ApiClient(self.dir.path / "api.sock")
        #: The vsock device's host socket; the agent listens on guest port ``agent_port``.
        self.vsock_uds = self.dir.path / "v.sock"
        self.agent_port = AGENT_PORT
        self.agent_endpoint = AgentEndpoint.vsock(self.vsock_uds, self.agent_port)
        self.network: VmNetwork | None = VmNetwork(self.vm_id) if backend.network else None
        self.pid: int | None = None
        self.paused = False
        #: Set by ``backend.restore``: ``start()`` loads it instead of booting.
        self.snapshot: SnapshotFiles | None = None
        self.started_at = 0.0
        #: Seconds per start step (disk copy, API up, configure, InstanceStart or load).
        self.timings: dict[str, float] = {}
        self._proc: asyncio.subprocess.Process | None = None
        self._skipped: dict[Phase, str] = {}

    def _restored(self) -> None:
        """Phases after a snapshot load: the guest wakes up, it does not boot."""
        self.readiness.reached[Phase.STATE_RESTORED] = round(time.monotonic() - self.started_at, 3)
        self._skipped = dict(RESTORE_SKIPPED)
        self.readiness.skipped.update(self._skipped)

    def seen(self, name: str) -> Path:
        """The path firecracker is given for a file of this VM (stable across clones)."""
        return self.backend.vm_dir / name

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Boot from the image's artifacts, or (made by ``restore``) resume the snapshot."""
        snapshot = self.snapshot
        if self.state is not InstanceState.CREATED:
            raise VmError(f"instance {self.spec.instance_id} was already started")
        self.state = InstanceState.FAILED  # until firecracker runs
        artifacts = None if snapshot is not None else await self._checked_artifacts()
        if snapshot is not None and Path(snapshot.meta["vm_dir"]) != self.backend.vm_dir:
            raise VmError(
                f"snapshot {snapshot.directory} records its files under {snapshot.meta['vm_dir']}, "
                f"this backend uses {self.backend.vm_dir}: restore it with the same vm_dir"
            )
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
                await self.api.snapshot_load(
                    snapshot.file(SnapshotFiles.VMSTATE),
                    snapshot.file(SnapshotFiles.MEMORY),
                    resume=True,
                )
                self.timings["snapshot_load"] = time.monotonic() - t
                self._restored()
        except BaseException as exc:
            evidence = self._evidence() if isinstance(exc, VmError) else ""
            with contextlib.suppress(VmError):
                await self.destroy()
            self.state = InstanceState.FAILED
            if evidence and isinstance(exc, VmError) and not isinstance(exc, NotReady):
                # Same type (callers match on FirecrackerApiError), with the evidence added.
                exc.message = f"{exc.message}\n{evidence}"
                exc.args = (exc.message,)
            raise
        self.state = InstanceState.STARTING

    async def _checked_artifacts(self) -> VmArtifacts:
        artifacts = await self.backend.artifacts(self.spec)
        for what, path in (("kernel", artifacts.vmlinux), ("root disk", artifacts.disk)):
            if not path.is_file():
                raise VmError(
                    f"the VM {what} {path} does not exist (build the image's VM artifacts)"
                )
        if artifacts.initrd is not None and not artifacts.initrd.is_file():
            raise VmError(f"the VM initrd {artifacts.initrd} does not exist")
        return artifacts

    async def _prepare(self, artifacts: VmArtifacts | None, snapshot: SnapshotFiles | None) -> None:
        d = self.dir.path
        t = time.monotonic()
        disk = (
            snapshot.file(SnapshotFiles.DISK) if snapshot else artifacts.disk if artifacts else None
        )
        assert disk is not None
        await cow_copy(disk, d / "rootfs.ext4")
        self.timings["disk_copy"] = time.monotonic() - t
        write_config_disk(d / "config.disk", self.spec.agent_token, self.spec.agent_env)
        if snapshot is not None and bool(snapshot.meta.get("network")) != bool(self.network):
            self.network = VmNetwork(self.vm_id) if snapshot.meta.get("network") else None
        self._write_meta()
        if self.network is not None:
            await self.network.create()

    def launch_argv(self) -> list[str]:
        fc = [
            str(self.backend.firecracker), "--id", self.vm_id, "--api-sock", str(self.api.socket),
            "--log-path", str(self.log_path), "--level", "Info", "--show-level",
        ]  # fmt: skip
        argv = [
            "unshare", "--mount", "--propagation", "private", "--",
            "/bin/sh", "-c", LAUNCHER, "remotecli-fc", str(self.dir.path),
            str(self.backend.vm_dir), *fc,
        ]  # fmt: skip
        if self.network is not None:
            argv = ["nsenter", f"--net={self.network.handle}", "--", *argv]
        return argv

    async def _spawn(self) -> None:
        self.log_path.touch(mode=0o600)
        self.backend.vm_dir.mkdir(parents=True, exist_ok=True)  # the bind mount's target
        with self.console_path.open("ab") as console:
            self.started_at = time.monotonic()
            # Long-lived, so not proc.run: its own session (a signal to the
            # controller's group must not take VMs down with it).
            self._proc = await asyncio.create_subprocess_exec(
                *self.launch_argv(), stdin=asyncio.subprocess.DEVNULL, stdout=console,
                stderr=asyncio.subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self.pid = self._proc.pid
        self._write_meta()

    async def _wait_api(self) -> None:
        limit = self.spec.deadlines[Phase.VMM_STARTED]
        try:
            waited = await self.api.wait_until_up(limit, alive=self._alive)
        except VmError as exc:
            await self._wait_exit(1.0)
            waited = time.monotonic() - self.started_at
            raise self._not_ready(Phase.VMM_STARTED, waited, str(exc)) from None
        self.timings["api_up"] = waited
        self.readiness.reached[Phase.VMM_STARTED] = round(time.monotonic() - self.started_at, 3)

    async def _configure(self, artifacts: VmArtifacts) -> None:
        api = self.api
        await api.machine_config(vcpus=self.spec.vcpus, memory_mib=self.spec.memory_mib)
        args = boot_args(f"{artifacts.cmdline} {self.backend.extra_boot_args}")
        await api.boot_source(artifacts.vmlinux, args, artifacts.initrd)
        await api.drive("rootfs", self.seen("rootfs.ext4"), root=True)
        await api.drive("config", self.seen("config.disk"), read_only=True)
        await api.vsock(self.seen("v.sock"), GUEST_CID)
        if self.network is not None:
            await api.network_interface("eth0", self.network.tap, GUEST_MAC)

    async def wait_ready(self) -> Readiness:
        if self.state is not InstanceState.STARTING:
            raise VmError(f"instance {self.spec.instance_id} is {self.state}, not starting")
        try:
            if self.snapshot is not None:
                # /health over vsock, then this clone's own identity (restore.py).
                await restore.wait_restored(
                    self, backend="firecracker", started_at=self.started_at,
                    readiness=self.readiness, snapshot=self.snapshot,
                )  # fmt: skip
            else:
                await readiness.wait_ready(
                    self, backend="firecracker", started_at=self.started_at, markers=MARKERS,
                    skipped=self._skipped, readiness=self.readiness,
                )  # fmt: skip
        except NotReady as exc:
            self.state = InstanceState.FAILED
            raise _with_hint(exc, self._evidence()) from None
        except BaseException:
            self.state = InstanceState.FAILED
            raise
        self.state = InstanceState.READY
        return self.readiness

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
        _new_snapshot_dir(directory)
        if not self.paused:
            await self.pause()
        t = time.monotonic()
        # Host paths: the snapshot files are not recorded in the snapshot itself.
        await self.api.snapshot_create(
            directory / SnapshotFiles.VMSTATE, directory / SnapshotFiles.MEMORY
        )
        self.timings["snapshot_create"] = time.monotonic() - t
        # While paused, so the disk matches the memory image exactly.
        t = time.monotonic()
        await cow_copy(self.dir.path / "rootfs.ext4", directory / SnapshotFiles.DISK)
        shutil.copyfile(self.dir.path / "config.disk", directory / SnapshotFiles.CONFIG)
        self.timings["snapshot_disk_copy"] = time.monotonic() - t
        meta = {
            "format": SNAPSHOT_FORMAT,
            "backend": "firecracker",
            "firecracker_version": fcbin.VERSION,
            "source_instance": self.spec.instance_id,
            "image": str(self.spec.image),
            "golden_token": self.spec.agent_token,
            "boot_phases": dict(boot_phases or self.readiness.durations()),
            "created_at": time.time(),
            "vm_dir": str(self.backend.vm_dir),
            "drives": {
                "rootfs": str(self.seen("rootfs.ext4")), "config": str(self.seen("config.disk")),
            },
            "vsock": {
                "guest_cid": GUEST_CID, "uds_path": str(self.seen("v.sock")),
                "agent_port": self.agent_port,
            },
            "network": self.network is not None,
            "memory_mib": self.spec.memory_mib,
            "vcpus": self.spec.vcpus,
        }  # fmt: skip
        statedir.write_private(directory / SNAPSHOT_META, json.dumps(meta, indent=2) + "\n")
        return SnapshotFiles.load(directory)

    # -- teardown ----------------------------------------------------------------

    async def destroy(self) -> None:
        """Kill firecracker (the disk is thrown away: nothing to shut down cleanly), verify."""
        if self._alive():
            assert self.pid is not None
            proc.kill_group(self.pid)  # its own session: pgid == pid
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            await self._wait_exit(5.0)
        if self.network is not None:
            await self.network.delete()
        self.dir.remove()
        problems = self._leftovers()
        self.state = InstanceState.STOPPED
        if problems:
            raise VmError(
                f"destroying firecracker instance {self.spec.instance_id} left things behind:\n  "
                + "\n  ".join(problems)
            )

    def _leftovers(self) -> list[str]:
        problems = []
        if self._alive():
            problems.append(f"firecracker pid {self.pid} still runs")
        if self.dir.path.exists():
            problems.append(f"state directory {self.dir.path}")
        if self.network is not None and self.network.exists():
            problems.append(f"network namespace {self.network.netns}")
        problems += [f"mount {m}" for m in statedir.mounts_under(self.dir.path)]
        problems += [f"mount {m}" for m in statedir.mounts_under(self.backend.vm_dir)]
        return problems

    # -- evidence ------------------------------------------------------------------

    def exit_code(self) -> int | None:
        if self._proc is not None:
            return self._proc.returncode
        return None if self._alive() else -1  # adopted by reap(): status unknown

    def console_tail(self, max_chars: int = 4000) -> str:
        return readiness.console_tail(self.console_path, max_chars)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The end of Firecracker's own log (API requests, KVM exits, its exit reason)."""
        return readiness.console_tail(self.log_path, max_lines=lines)

    async def unit_state(self) -> UnitState | None:
        return None  # no way into the guest but the agent itself

    def _evidence(self) -> str:
        parts = []
        if (code := self.exit_code()) is not None:
            parts.append(f"firecracker exited with code {code}.")
        if log := self.log_tail():
            parts.append(f"Firecracker's log ({self.log_path}):\n{log}")
        if console := self.console_tail(1500):
            parts.append(f"Console ({self.console_path}):\n{console}")
        return "\n".join(parts)

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
            "backend": "firecracker", "vm_id": self.vm_id, "pid": self.pid,
            "firecracker": str(self.backend._firecracker or ""), "vm_dir": str(self.backend.vm_dir),
            "netns": self.network.netns if self.network else None,
            "vsock_uds": str(self.vsock_uds), "agent_port": self.agent_port,
        })  # fmt: skip

    def _alive(self) -> bool:
        if self._proc is not None:
            return self._proc.returncode is None
        return statedir.pid_alive(self.pid, self.vm_id)

    async def _wait_exit(self, timeout: float) -> bool:
        if self._proc is not None:
            try:
                await asyncio.wait_for(self._proc.wait(), timeout)
            except TimeoutError:
                return False
            return True
        return await statedir.wait_gone(self.pid, self.vm_id, timeout)


def _new_snapshot_dir(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    if (directory / SNAPSHOT_META).exists():
        raise VmError(f"{directory} already holds a snapshot")


def _with_hint(exc: NotReady, evidence: str) -> NotReady:
    """``exc`` with Firecracker's own evidence (exit code, its log tail) added to the hint."""
    return NotReady(
        instance_id=exc.instance_id, backend=exc.backend, last_phase=exc.last_phase,
        waiting_for=exc.waiting_for, deadline=exc.deadline, phases=exc.phases,
        skipped=exc.skipped, console_tail=exc.console_tail, unit_state=exc.unit_state,
        hint=f"{exc.hint}\n{evidence}" if evidence else exc.hint, cause=exc.cause,
    )  # fmt: skip
