"""The qemu backend: the golden image as a QEMU ``microvm``, driven over QMP; golden snapshots.

One instance = one ``qemu-system-x86_64`` process in its own session::

    qemu-system-x86_64 -name guest=remotecli-ID -accel kvm|tcg \\
        -M microvm,isa-serial=on,rtc=on -m MEM -smp N -nodefaults -no-user-config \\
        -no-reboot -display none \\
        -chardev file,id=console,path=STATE/console.log,append=on -serial chardev:console \\
        -qmp unix:STATE/qmp.sock,server=on,wait=off \\
        -kernel vmlinuz -initrd initrd.img \\
        -append "BASE_CMDLINE remotecli.net=10.0.2.15/24,10.0.2.2" \\
        -drive file=STATE/disk.qcow2,if=none,id=root,format=qcow2 \\
        -device virtio-blk-device,drive=root \\
        -drive file=STATE/config.disk,if=none,id=config,format=raw,readonly=on \\
        -device virtio-blk-device,drive=config \\
        -netdev user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:PORT-:8080[,guestfwd=...] \\
        -device virtio-net-device,netdev=net0
        [-S -incoming "exec:cat SNAPSHOT/state"]          (a restore)

Its state directory (``statedir.StateDir``)::

    <root>/<id>/
        instance.json   backend, pid, the agent endpoint (tcp 127.0.0.1:PORT), snapshot
        run/            token + agent.env (what the config disk carries)
        console.log     the serial console from the first byte, and QEMU's own stderr
        qmp.sock        QMP (``qmp.py``)
        disk.qcow2      copy-on-write overlay over the image's ext4 disk (or a snapshot's disk)
        config.disk     raw tar: the initramfs unpacks it into /run/agent (``images/configdisk.py``)

**Network.** User-mode networking (slirp) with ``restrict=on``: the guest
reaches neither the host's loopback services (the controller's API,
PostgreSQL) nor the outside. The host reaches the agent through
``hostfwd`` on 127.0.0.1 (a free port per VM: no vhost-vsock here); the
initramfs gives the guest 10.0.2.15/24 via 10.0.2.2 (``remotecli.net=`` on
the kernel command line). ``GuestForward`` opens exactly one host loopback
port to the guest (``guestfwd`` at 10.0.2.100, each connection piped by
``busybox nc``): explicit forwards still work under ``restrict=on``.

**Speed.** With KVM usable (``hostcheck``: VT-x/AMD-V, not kvm-pvm) QEMU runs
``-accel kvm -cpu host``; else ``-accel tcg`` (software emulation: ~15-20 s
to AGENT_READY here), and then ``spec.deadlines`` are multiplied by
``TCG_DEADLINE_FACTOR`` when the caller left them at their defaults.

**Snapshots** (``snapshot.py``). ``create_snapshot`` boots cold to AGENT_READY, ``stop``s the
VM, migrates its state to ``<snapshot>/state`` (``exec:cat > FILE``: QEMU
7.2 has no ``file:`` URI), copies its overlay (flushed by the stop) to
``<snapshot>/disk.qcow2`` and destroys it. A clone gets a new overlay
backed by that disk and starts with ``-S -incoming "exec:cat STATE"``; once
the incoming migration is in (``query-status`` leaves ``inmigrate``), ``cont``
is STATE_RESTORED and ``restore.wait_restored`` gives it its own identity.
A clone needs the same machine (memory, vCPUs, accel, devices, kernel) as
its snapshot: those are recorded in ``Snapshot.meta`` and reused.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from remotecli import proc
from remotecli.errors import CommandFailed, NotReady, VmError
from remotecli.images import configdisk, layout
from remotecli.vmm import hostcheck, lifecycle, readiness, statedir
from remotecli.vmm.artifacts import golden_artifacts
from remotecli.vmm.base import (
    ArtifactsFor,
    Deadlines,
    InstanceSpec,
    InstanceState,
    Phase,
    Readiness,
    Snapshot,
    UnitState,
    VmArtifacts,
)
from remotecli.vmm.endpoint import AgentEndpoint, free_tcp_port
from remotecli.vmm.qemu import snapshot as qemusnap
from remotecli.vmm.qemu.qmp import QmpClient, QmpError
from remotecli.vmm.qemu.snapshot import CONFIG, DISK, STATE_FILE, check_snapshot
from remotecli.vmm.vmmproc import VmmProcess

STATE_ROOT = Path("/run/remotecli/qemu")
QEMU = "qemu-system-x86_64"
NAME_PREFIX = "remotecli-"
MACHINE = "microvm,isa-serial=on,rtc=on"
#: The slirp network: the guest's address, its gateway (QEMU), the forward address.
GUEST_NET = "10.0.2.15/24,10.0.2.2"
FORWARD_ADDR = "10.0.2.100"
AGENT_PORT = layout.AGENT_PORT
#: Every VM agent may take a new hostname and clock from POST /identity (restores).
VM_AGENT_ARGS = "--machine-identity"
#: Software emulation boots ~10x slower than KVM: default deadlines are scaled by this.
TCG_DEADLINE_FACTOR = 4.0
MARKERS = dict(readiness.DEFAULT_MARKERS)
#: What QEMU prints when the hostfwd port was taken between our check and its bind.
HOSTFWD_TAKEN = "Could not set up host forwarding rule"
PORT_ATTEMPTS = 3
#: QEMU has nothing to shut down cleanly (the overlay is thrown away): SIGTERM, then SIGKILL.
STOP_SECONDS = 5.0
QEMU_IMG_TIMEOUT = 60.0


@dataclass(frozen=True)
class GuestForward:
    """The guest's ``FORWARD_ADDR:guest_port`` reaches the host's ``127.0.0.1:host_port``."""

    host_port: int
    guest_port: int = 0  # 0: the same as host_port

    def netdev_option(self, nc: str) -> str:
        port = self.guest_port or self.host_port
        return f"guestfwd=tcp:{FORWARD_ADDR}:{port}-cmd:{nc} nc 127.0.0.1 {self.host_port}"

    @property
    def guest_url(self) -> str:
        return f"http://{FORWARD_ADDR}:{self.guest_port or self.host_port}"


def default_accel() -> str:
    return "kvm" if hostcheck.gather().kvm_usable else "tcg"


class QemuBackend:
    name = "qemu"
    isolation = "vm"
    supports_snapshots = True

    def __init__(
        self,
        state_root: Path = STATE_ROOT,
        *,
        artifacts: ArtifactsFor = golden_artifacts,
        qemu: str = QEMU,
        accel: str | None = None,
        forwards: Sequence[GuestForward] = (),
        stop_seconds: float = STOP_SECONDS,
    ) -> None:
        self.state_root = state_root
        self.artifacts = artifacts
        self.qemu = qemu
        self.accel = accel or default_accel()
        self.forwards = tuple(forwards)
        self.stop_seconds = stop_seconds

    def create(self, spec: InstanceSpec) -> QemuInstance:
        statedir.check_id(spec.instance_id)
        if spec.layers:
            raise VmError(
                f"the qemu backend cannot apply extra layers ({', '.join(map(str, spec.layers))}): "
                "a VM boots the image's ext4 disk, not an overlay of directories. Build the "
                "layers into an image, or use the nspawn backend for layered variants."
            )
        return QemuInstance(self, spec)

    def restore(self, spec: InstanceSpec, snapshot: Snapshot) -> QemuInstance:
        """A clone: ``start()`` resumes ``snapshot`` on its own overlay, ``wait_ready()`` gives
        it ``spec.agent_token``, its hostname, fresh entropy and the time (restore.py)."""
        check_snapshot(snapshot)
        instance = self.create(spec)
        instance.snapshot = snapshot
        return instance

    async def create_snapshot(self, spec: InstanceSpec, directory: Path) -> Snapshot:
        """Boot ``spec`` cold to AGENT_READY, save it into ``directory`` (new or empty),
        destroy it."""
        instance = self.create(spec)
        return await lifecycle.saved_cold_boot(
            instance, lambda phases: instance.save(directory, boot_phases=phases)
        )

    async def list_running(self) -> list[str]:
        """Ids of this backend's instances on the host: running, or left behind for ``reap``."""
        return [
            d.instance_id
            for d in statedir.scan(self.state_root)
            if d.read_meta().get("backend", "qemu") == "qemu"
        ]

    async def reap(self, instance_id: str) -> None:
        """Destroy an instance we have no handle for (after a controller restart)."""
        spec, meta = lifecycle.adopted(self.state_root, instance_id)
        instance = QemuInstance(self, spec)
        instance.process.pid = meta.get("pid")
        endpoint = self.endpoint_of(meta)
        instance.host_port = endpoint.port if endpoint is not None else 0
        await instance.destroy()

    @staticmethod
    def endpoint_of(meta: Mapping[str, Any]) -> AgentEndpoint | None:
        """The agent endpoint recorded in an instance's meta (for a restarted controller)."""
        data = meta.get("agent_endpoint")
        return AgentEndpoint.from_json(data) if isinstance(data, dict) else None


class QemuInstance:
    def __init__(self, backend: QemuBackend, spec: InstanceSpec) -> None:
        self.backend = backend
        if backend.accel == "tcg" and spec.deadlines == Deadlines():
            spec = replace(spec, deadlines=spec.deadlines.scaled(TCG_DEADLINE_FACTOR))
        self.spec = spec
        self.state = InstanceState.CREATED
        self.readiness = Readiness()
        self.dir = statedir.StateDir(backend.state_root / spec.instance_id)
        self.name = NAME_PREFIX + spec.instance_id
        self.console_path = self.dir.console
        self.qmp = QmpClient(self.dir.path / "qmp.sock")
        self.host_port = 0
        self.agent_endpoint = AgentEndpoint.tcp("127.0.0.1", 0)
        # The name and the NUL after it in the command line: remotecli-ab is not remotecli-abc.
        self.process = VmmProcess(f"guest={self.name}\0")
        #: Set by ``backend.restore``: ``start()`` resumes it instead of booting.
        self.snapshot: Snapshot | None = None
        #: The machine this VM runs (kernel, memory, accel...): a snapshot records it.
        self.machine: dict[str, Any] = {}
        self.started_at = 0.0
        #: Seconds per start step (overlay, QEMU up, incoming migration, save...).
        self.timings: dict[str, float] = {}
        self._spawned = False

    @property
    def pid(self) -> int | None:
        return self.process.pid

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Boot the image's kernel and disk, or (made by ``restore``) resume the snapshot."""
        lifecycle.begin_start(self)
        snapshot = self.snapshot
        if snapshot is None:
            artifacts = await self.backend.artifacts(self.spec)
            self.machine = self._machine(artifacts)
        else:
            self.machine = dict(snapshot.meta["machine"])
            if self.machine["accel"] != self.backend.accel:
                raise VmError(
                    f"snapshot {snapshot.directory} was made with -accel {self.machine['accel']}, "
                    f"this backend runs -accel {self.backend.accel}: make a snapshot here"
                )
        env = dict(self.spec.agent_env)
        # Ours first: argparse keeps the last of a repeated option, so the caller can override.
        extra = env.get("REMOTECLI_AGENT_ARGS", "")
        env["REMOTECLI_AGENT_ARGS"] = f"{VM_AGENT_ARGS} {extra}".strip()
        # Outside the try: an existing directory belongs to another instance.
        self.dir.create(self.spec.agent_token, env)
        try:
            await self._prepare(env, snapshot)
            await self._launch()
            if snapshot is not None:
                await self._resume()
        except BaseException as exc:
            evidence = await lifecycle.abandon_start(self, exc, self.evidence)
            if evidence and isinstance(exc, VmError):
                raise VmError(f"{exc.message}\n{evidence}") from exc
            raise
        lifecycle.move(self, InstanceState.STARTING)

    def _machine(self, artifacts: VmArtifacts) -> dict[str, Any]:
        if artifacts.initrd is None:
            raise VmError(
                f"the VM artifacts in {artifacts.directory} have no initramfs: the qemu "
                "backend boots the image's /init from one (rdinit=/init)"
            )
        return {
            "accel": self.backend.accel,
            "memory_mib": self.spec.memory_mib,
            "vcpus": self.spec.vcpus,
            "kernel": str(artifacts.vmlinuz),
            "initrd": str(artifacts.initrd),
            "append": " ".join(
                [artifacts.cmdline, f"remotecli.net={GUEST_NET}", *self._tcg_args()]
            ),
            "base_disk": str(artifacts.disk),
            "kernel_version": artifacts.kernel_version,
            "artifacts": str(artifacts.directory),
        }

    def _tcg_args(self) -> list[str]:
        """Under TCG, the TSC frequency, so the guest does not calibrate it against the PIT.

        Measured here: ~1 boot in 6 the PIT calibration misses its window on a
        busy host ("tsc: Unable to calibrate against PIT ... could not calculate
        TSC khz") and the kernel then hangs before init. A TCG guest's TSC
        runs at the host's TSC rate, which /proc/cpuinfo's "cpu MHz" shows.
        """
        if self.backend.accel != "tcg":
            return []
        khz = host_tsc_khz()
        return [f"tsc_early_khz={khz}"] if khz else []

    async def _prepare(self, env: Mapping[str, str], snapshot: Snapshot | None) -> None:
        d = self.dir.path
        t = time.monotonic()
        if snapshot is None:
            base, fmt = Path(self.machine["base_disk"]), "raw"
        else:
            base, fmt = snapshot.directory / DISK, "qcow2"
        await qemu_img_overlay(base, fmt, d / DISK)
        self.timings["overlay"] = time.monotonic() - t
        configdisk.write_config_disk(d / CONFIG, token=self.spec.agent_token, env=env)
        if snapshot is not None:
            # The guest saw a drive of this size when it was saved; keep the device identical.
            size = int(snapshot.meta.get("config_disk_bytes", 0))
            if (d / CONFIG).stat().st_size < size:
                os.truncate(d / CONFIG, size)
        self._write_meta()

    def launch_argv(self) -> list[str]:
        d, m = self.dir.path, self.machine
        net = [
            "user", "id=net0", "restrict=on",
            f"hostfwd=tcp:127.0.0.1:{self.host_port}-:{AGENT_PORT}",
        ]  # fmt: skip
        if self.backend.forwards:
            nc = shutil.which("busybox")
            if nc is None:
                raise VmError("guest forwards pipe through `busybox nc`: apt-get install busybox")
            net += [f.netdev_option(nc) for f in self.backend.forwards]
        accel = ["-accel", "kvm", "-cpu", "host"] if m["accel"] == "kvm" else ["-accel", "tcg"]
        argv = [
            self.backend.qemu, "-name", f"guest={self.name}", *accel, "-M", MACHINE,
            "-m", str(m["memory_mib"]), "-smp", str(m["vcpus"]),
            "-nodefaults", "-no-user-config", "-no-reboot", "-display", "none",
            "-chardev", f"file,id=console,path={_opt(self.console_path)},append=on",
            "-serial", "chardev:console",
            "-qmp", f"unix:{_opt(self.qmp.socket)},server=on,wait=off",
            "-kernel", m["kernel"], "-initrd", m["initrd"], "-append", m["append"],
            "-drive", f"file={_opt(d / DISK)},if=none,id=root,format=qcow2",
            "-device", "virtio-blk-device,drive=root",
            "-drive", f"file={_opt(d / CONFIG)},if=none,id=config,format=raw,readonly=on",
            "-device", "virtio-blk-device,drive=config",
            "-netdev", ",".join(net), "-device", "virtio-net-device,netdev=net0",
        ]  # fmt: skip
        if self.snapshot is not None:
            state = self.snapshot.directory / STATE_FILE
            argv += ["-S", "-incoming", f"exec:cat {shlex.quote(str(state))}"]
        return argv

    async def _launch(self) -> None:
        """Spawn QEMU and connect to QMP (VMM_STARTED); a taken hostfwd port is retried."""
        for attempt in range(1, PORT_ATTEMPTS + 1):
            self.host_port = free_tcp_port()
            self.agent_endpoint = AgentEndpoint.tcp("127.0.0.1", self.host_port)
            offset = self.console_path.stat().st_size if self.console_path.exists() else 0
            await self._spawn()
            try:
                waited = await self.qmp.connect(
                    self.spec.deadlines[Phase.VMM_STARTED], alive=self.process.alive
                )
            except QmpError as exc:
                await self.process.wait_exit(2.0)
                said = self._qemu_said(offset)
                if HOSTFWD_TAKEN in said and attempt < PORT_ATTEMPTS and not self.process.alive():
                    continue  # another process took the port between our check and QEMU's bind
                raise self._not_ready(Phase.VMM_STARTED, exc.desc, said) from None
            self.timings["qmp_up"] = waited
            self.readiness.reached[Phase.VMM_STARTED] = self._now()
            self._write_meta()
            return

    async def _spawn(self) -> None:
        # Its own session, stdout + stderr appended to the console (QEMU's errors are evidence).
        self.process = VmmProcess(self.process.marker)
        self.started_at = time.monotonic()
        await self.process.spawn(self.launch_argv(), self.console_path)
        self._spawned = True
        self._write_meta()

    async def _resume(self) -> None:
        """Wait for the incoming migration (the snapshot's state), then ``cont``: STATE_RESTORED."""
        t = time.monotonic()
        limit = self.spec.deadlines[Phase.STATE_RESTORED]
        status = "inmigrate"
        while status == "inmigrate":
            if time.monotonic() - t > limit:
                raise self._not_ready(
                    Phase.STATE_RESTORED, f"the snapshot's state did not load within {limit:.0f} s"
                )
            try:
                status = (await self.qmp.execute("query-status"))["status"]
            except QmpError as exc:
                await self.process.wait_exit(2.0)
                raise self._not_ready(
                    Phase.STATE_RESTORED, f"QEMU failed while loading the snapshot: {exc.desc}"
                ) from None
            if status == "inmigrate":
                await asyncio.sleep(0.01)
        if status not in ("paused", "prelaunch", "postmigrate"):
            raise self._not_ready(
                Phase.STATE_RESTORED, f"after loading the snapshot QEMU's VM is {status!r}"
            )
        self.timings["incoming"] = time.monotonic() - t
        await self.qmp.execute("cont")
        self.readiness.reached[Phase.STATE_RESTORED] = self._now()

    async def wait_ready(self) -> Readiness:
        """Cold boot: the console's markers then /health; restore: /health + new identity."""
        return await lifecycle.wait_ready(
            self, backend="qemu", markers=MARKERS, skipped={}, snapshot=self.snapshot
        )

    # -- snapshots --------------------------------------------------------------

    async def save(
        self, directory: Path, *, boot_phases: Mapping[str, float] | None = None
    ) -> Snapshot:
        """Stop the VM and write its state + disk into ``directory`` (``qemusnap.save``)."""
        return await qemusnap.save(self, directory, boot_phases=boot_phases)

    # -- teardown ----------------------------------------------------------------

    async def destroy(self) -> None:
        """Kill QEMU (the overlay is thrown away: nothing to shut down cleanly), verify.

        Idempotent. Raises ``VmError`` naming whatever is left (process, files, port).
        """
        await self.qmp.close()
        # Only a process we spawned, or one whose command line is still ours, is signalled.
        ours = self._spawned or self.process.alive()
        if self.process.alive() and not await self.process.terminate(self.backend.stop_seconds):
            await self.process.kill()
        if ours and self.pid:
            # Its session (pgid == pid) also holds the helpers it forked: a guestfwd's
            # `nc` per connection, the migration's `cat`.
            proc.kill_group(self.pid)
        self.dir.remove()
        lifecycle.stopped(self, "qemu", self._leftovers())

    def _leftovers(self) -> list[str]:
        problems = lifecycle.leftovers("qemu", self.process, self.dir.path)
        if self.pid:
            problems += [f"process {p} of qemu's session" for p in _group_members(self.pid)]
        if self.host_port and _listening(self.host_port):
            problems.append(f"port 127.0.0.1:{self.host_port} still listens")
        return problems

    # -- evidence ------------------------------------------------------------------

    def exit_code(self) -> int | None:
        return self.process.exit_code()

    def console_tail(self, max_chars: int = 4000) -> str:
        return readiness.console_tail(self.console_path, max_chars)

    async def unit_state(self) -> UnitState | None:
        """None: a VM has no exec channel but its agent (no nsenter, no guest agent)."""
        return None

    def _qemu_said(self, offset: int = 0) -> str:
        """QEMU's own stderr lines (``qemu-system-x86_64: ...``) on the console since ``offset``."""
        try:
            with self.console_path.open("rb") as fh:
                fh.seek(offset)
                text = fh.read().decode(errors="replace")
        except OSError:
            return ""
        # Some errors carry the binary's name, some just "qemu:" (a missing -kernel file).
        prefixes = (Path(self.backend.qemu).name + ":", "qemu:")
        return "\n".join(ln for ln in text.splitlines() if ln.startswith(prefixes))

    def evidence(self) -> str:
        """QEMU's own words and the console tail, for an error message."""
        said = self._qemu_said()
        return lifecycle.evidence(self, "qemu", f"QEMU said:\n{said}" if said else "")

    def _not_ready(self, phase: Phase, why: str, said: str | None = None) -> NotReady:
        said = self._qemu_said() if said is None else said
        code = self.exit_code()
        return NotReady(
            instance_id=self.spec.instance_id, backend="qemu",
            last_phase=self.readiness.last.value if self.readiness.last else None,
            waiting_for=phase.value, deadline=round(time.monotonic() - self.started_at, 3),
            phases=self.readiness.durations(),
            skipped={p.value: r for p, r in self.readiness.skipped.items()},
            console_tail=self.console_tail(), unit_state=None,
            hint=f"{why}." + (f" QEMU said: {said}" if said else "")
            + (f" (qemu exited with code {code})" if code is not None else ""),
            cause="vmm_exited" if code is not None else "vmm_failed",
        )  # fmt: skip

    # -- internals -------------------------------------------------------------------

    def _now(self) -> float:
        return round(time.monotonic() - self.started_at, 3)

    def _write_meta(self) -> None:
        if not self.dir.path.is_dir():
            return
        self.dir.write_meta({
            "backend": "qemu", "name": self.name, "pid": self.pid,
            "image": str(self.spec.image), "agent_endpoint": self.agent_endpoint.to_json(),
            "accel": self.backend.accel,
            "snapshot": str(self.snapshot.directory) if self.snapshot else None,
        })  # fmt: skip


async def qemu_img_overlay(base: Path, fmt: str, overlay: Path) -> None:
    """A qcow2 overlay backed by ``base`` (read-only to QEMU, never written)."""
    try:
        await proc.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", fmt, str(overlay)],
            timeout=QEMU_IMG_TIMEOUT,
        )
    except CommandFailed as exc:
        raise VmError(f"cannot make the VM's disk overlay over {base}: {exc.message}") from exc


def host_tsc_khz(cpuinfo: Path = Path("/proc/cpuinfo")) -> int | None:
    """The host's TSC rate in kHz from the first "cpu MHz" line, or None."""
    with contextlib.suppress(OSError, ValueError):
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "cpu MHz":
                return round(float(value) * 1000)
    return None


def _opt(path: Path) -> str:
    """A path inside a QEMU ``-drive``/``-chardev`` option: commas are doubled."""
    return str(path).replace(",", ",,")


def _group_members(pgid: int) -> list[int]:
    """Live processes in process group ``pgid`` (field 5 of /proc/PID/stat)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid and fields[0] != "Z":
                    found.append(int(entry.name))
    return found


def _listening(port: int) -> bool:
    """Whether something listens on 127.0.0.1:``port`` (from /proc/net/tcp, state 0A)."""
    want = f"0100007F:{port:04X}"
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if len(fields) > 3 and fields[1] == want and fields[3] == "0A":
                return True
    return False
