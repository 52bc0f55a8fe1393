"""QEMU golden snapshots: what a snapshot directory holds, saving one, checking one.

``save`` stops a ready VM, migrates its state to ``<snapshot>/state``
(``exec:cat > FILE``: QEMU 7.2 has no ``file:`` URI), copies its overlay
(flushed by the stop) to ``<snapshot>/disk.qcow2`` and records the machine
(memory, vCPUs, accel, kernel, disk) a clone must reuse. Restoring is
``backend.py``'s: ``-S -incoming "exec:cat STATE"``, then ``cont``. ``save``
sees the VM through ``Saving`` (what it reads and sends), not the backend.
"""

from __future__ import annotations

import asyncio
import shlex
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from remotecli import proc
from remotecli.errors import VmError
from remotecli.vmm import snapshotdir, statedir
from remotecli.vmm.base import InstanceSpec, InstanceState, Readiness, Snapshot
from remotecli.vmm.snapshotdir import SNAPSHOT_FORMAT

#: In a snapshot: the migrated state. In an instance's state dir and a snapshot: the disk.
STATE_FILE = "state"
DISK = "disk.qcow2"
#: In an instance's state dir: the config disk (its size is recorded in the snapshot).
CONFIG = "config.disk"
MIGRATE_TIMEOUT = 300.0


class Monitor(Protocol):
    """The QMP connection ``save`` speaks through (``QemuInstance.qmp``)."""

    @property
    def version(self) -> str:
        """QEMU's version (``7.2.22``), recorded in the snapshot."""
        ...

    async def execute(self, command: str, arguments: Mapping[str, Any] | None = None) -> Any: ...


class Saving(Protocol):
    """What ``save`` needs of a ready VM (``QemuInstance``)."""

    @property
    def spec(self) -> InstanceSpec: ...
    @property
    def state(self) -> InstanceState: ...
    @property
    def readiness(self) -> Readiness: ...
    @property
    def qmp(self) -> Monitor: ...
    @property
    def dir(self) -> statedir.StateDir:
        """Its state directory: the overlay (``DISK``) and the config disk (``CONFIG``)."""
        ...

    @property
    def machine(self) -> Mapping[str, Any]:
        """The machine a clone must reuse (memory, vCPUs, accel, kernel, disks)."""
        ...

    @property
    def timings(self) -> dict[str, float]:
        """Seconds per step: ``save`` adds ``save_state`` and ``save_disk``."""
        ...

    def evidence(self) -> str: ...


def check_snapshot(snapshot: Snapshot) -> None:
    """Refuse a snapshot that is not a qemu one of this format, or whose files are gone."""
    if snapshot.backend != "qemu" or snapshot.meta.get("format") != SNAPSHOT_FORMAT:
        raise VmError(
            f"{snapshot.directory} is a {snapshot.backend} snapshot (format "
            f"{snapshot.meta.get('format')}), not a format-{SNAPSHOT_FORMAT} qemu one"
        )
    missing = snapshotdir.missing(snapshot.directory, (STATE_FILE, DISK))
    missing += [p for p in snapshot.meta.get("boot_files", ()) if not Path(p).is_file()]
    if missing:
        raise VmError(
            f"snapshot {snapshot.directory} cannot be restored: missing {', '.join(missing)}. "
            "Remove it so it is made again."
        )


async def save(
    vm: Saving, directory: Path, *, boot_phases: Mapping[str, float] | None = None
) -> Snapshot:
    """Stop ``vm`` and write its state + disk into ``directory``; it stays stopped.

    ``directory`` must be new or empty. The state file holds the guest's
    memory (the golden token in it): it is created 0600.
    """
    if vm.state is not InstanceState.READY:
        raise VmError(f"instance {vm.spec.instance_id} is {vm.state}: save a ready VM")
    snapshotdir.create(directory)
    t = time.monotonic()
    await vm.qmp.execute("stop")
    state = directory / STATE_FILE
    statedir.write_private(state, "")  # `cat >` keeps the mode of an existing file
    await vm.qmp.execute("migrate", {"uri": f"exec:cat > {shlex.quote(str(state))}"})
    info = await _migration_done(vm)
    vm.timings["save_state"] = time.monotonic() - t
    t = time.monotonic()
    # Stopped and migrated: QEMU has flushed the overlay and writes no more.
    await proc.run(
        ["cp", "--sparse=always", "--", str(vm.dir.path / DISK), str(directory / DISK)],
        timeout=MIGRATE_TIMEOUT,
    )
    (directory / DISK).chmod(0o400)
    vm.timings["save_disk"] = time.monotonic() - t
    meta = {
        "format": SNAPSHOT_FORMAT,
        "qemu_version": vm.qmp.version,
        "source_instance": vm.spec.instance_id,
        "created_at": time.time(),
        "machine": vm.machine,
        "boot_files": [vm.machine["kernel"], vm.machine["initrd"], vm.machine["base_disk"]],
        "config_disk_bytes": (vm.dir.path / CONFIG).stat().st_size,
        "state_bytes": state.stat().st_size,
        "disk_bytes": (directory / DISK).stat().st_size,
        "migration": {"total_ms": info.get("total-time"), "downtime_ms": info.get("downtime")},
        "save_seconds": round(vm.timings["save_state"] + vm.timings["save_disk"], 3),
    }
    snapshot = Snapshot(
        backend="qemu", directory=directory, image=vm.spec.image,
        golden_token=vm.spec.agent_token,
        boot_phases=dict(boot_phases or vm.readiness.durations()), meta=meta,
    )  # fmt: skip
    snapshotdir.write_meta(snapshot)
    return snapshot


async def _migration_done(vm: Saving) -> dict[str, Any]:
    end = time.monotonic() + MIGRATE_TIMEOUT
    while True:
        info: dict[str, Any] = await vm.qmp.execute("query-migrate")
        status = info.get("status")
        if status == "completed":
            return info
        if status in ("failed", "cancelled"):
            raise VmError(
                f"saving {vm.spec.instance_id}'s state failed: "
                f"{info.get('error-desc', status)}\n{vm.evidence()}"
            )
        if time.monotonic() > end:
            raise VmError(f"saving {vm.spec.instance_id}'s state took over {MIGRATE_TIMEOUT} s")
        await asyncio.sleep(0.01)
