"""Firecracker snapshot directories: what one holds, how it is read back, how disks are copied.

A snapshot directory (``SnapshotFiles``; made and stored by ``snapshotdir.py``)::

    <directory>/
        snapshot.json   format, paths recorded in the VM state, golden token (0600)
        vmstate         Firecracker's device + vCPU state (``snapshot_path``)
        memory          guest memory, memory_mib MiB; clones map it privately
        disk.ext4       the root disk as it was at the pause (clones copy it)
        config.disk     the config drive the guest had (its path is recorded)

The VM state records the paths Firecracker was given for the drives and the
vsock (``vm_dir`` in ``snapshot.json``: the fixed directory every firecracker
sees, or ``/`` for a jailed one, whose chroot plays that role); a clone must
see its own files at the same paths, so a snapshot restores only into a
backend with the same ``vm_dir``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

from remotecli import proc
from remotecli.errors import VmError
from remotecli.vmm import snapshotdir, statedir
from remotecli.vmm.base import InstanceSpec
from remotecli.vmm.firecracker import binaries as fcbin
from remotecli.vmm.firecracker.api import ApiClient
from remotecli.vmm.firecracker.jail import Jail
from remotecli.vmm.snapshotdir import SNAPSHOT_FORMAT

SNAPSHOT_META = "snapshot.json"
COPY_TIMEOUT = 300.0


async def cow_copy(src: Path, dst: Path) -> None:
    """A copy-on-write copy where the filesystem can (XFS, btrfs), else a sparse full copy.

    The copy is made 0600 (the golden artifacts are read-only; cp keeps their mode).
    """
    await proc.run(
        ["cp", "--reflink=auto", "--sparse=always", "--", str(src), str(dst)],
        timeout=COPY_TIMEOUT,
    )
    os.chmod(dst, 0o600)


def move_file(src: Path, dst: Path) -> None:
    """``rename`` where both are on one filesystem, else copy + unlink (cross-device)."""
    try:
        os.replace(src, dst)
    except OSError as exc:
        if exc.errno != 18:  # EXDEV
            raise
        shutil.copyfile(src, dst)
        src.unlink()


class HasDirectory(Protocol):
    """A snapshot record (``base.Snapshot``) that names its directory."""

    @property
    def directory(self) -> Path: ...


@dataclass(frozen=True)
class SnapshotFiles:
    """A full Firecracker snapshot directory (same fields as ``base.Snapshot``)."""

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
        lacking = snapshotdir.missing(directory, (cls.VMSTATE, cls.MEMORY, cls.DISK, cls.CONFIG))
        if lacking:
            raise VmError(f"snapshot {directory} lacks {lacking[0]}")
        return cls(
            "firecracker", directory, Path(meta.get("image") or "/"),
            str(meta.get("golden_token") or ""), dict(meta.get("boot_phases") or {}), meta,
        )  # fmt: skip

    def file(self, name: str) -> Path:
        return self.directory / name

    def check_vm_dir(self, vm_dir: Path) -> None:
        """Refuse a restore that would show the clone its files at other paths."""
        recorded = Path(self.meta["vm_dir"])
        if recorded != vm_dir:
            where = "a jail's chroot" if recorded == Path("/") else str(recorded)
            raise VmError(
                f"snapshot {self.directory} records its files under {where}, this backend uses "
                f"{vm_dir}: restore it with the same vm_dir (jailed snapshots need a jailed "
                "backend and the other way round)"
            )


def new_snapshot_dir(directory: Path) -> None:
    """``snapshotdir.create``: a new or empty directory (one that holds a snapshot says so)."""
    if (directory / SNAPSHOT_META).exists():
        raise VmError(f"{directory} already holds a snapshot")
    snapshotdir.create(directory)


def write_meta(directory: Path, meta: Mapping[str, Any]) -> SnapshotFiles:
    """``snapshot.json`` (0600: it carries the golden token), then the directory, checked."""
    full = {"format": SNAPSHOT_FORMAT, "backend": "firecracker", **meta}
    statedir.write_private(directory / SNAPSHOT_META, json.dumps(full, indent=2) + "\n")
    return SnapshotFiles.load(directory)


class Snapshottable(Protocol):
    """What ``save`` needs of a paused ``FirecrackerInstance``."""

    spec: InstanceSpec
    api: ApiClient
    jail: Jail | None
    #: Where the VM's files are on the host (state dir or chroot).
    host_dir: Path
    guest_cid: int
    agent_port: int
    timings: dict[str, float]

    @property
    def network_on(self) -> bool: ...
    def seen(self, name: str) -> Path: ...


async def save(vm: Snapshottable, directory: Path, boot_phases: Mapping[str, float]) -> (
    SnapshotFiles
):  # fmt: skip
    """Write a full snapshot of the paused ``vm`` + the disk it needs into ``directory``."""
    t = time.monotonic()
    outputs = (SnapshotFiles.VMSTATE, SnapshotFiles.MEMORY)
    # Not recorded in the snapshot itself. A jailed firecracker writes only inside its
    # chroot: the files are moved out (a rename on one filesystem).
    if vm.jail is None:
        await vm.api.snapshot_create(*(directory / n for n in outputs))
    else:
        await vm.api.snapshot_create(*(vm.seen(f"snapshot.{n}") for n in outputs))
    if vm.jail is not None:
        for name in outputs:
            target = directory / name
            move_file(vm.host_dir / f"snapshot.{name}", target)
            # Readable by every VM of the jail's group, so its clones hard-link, not copy.
            os.chown(target, 0, vm.jail.config.gid)
            os.chmod(target, 0o640)
    vm.timings["snapshot_create"] = time.monotonic() - t
    # While paused, so the disk matches the memory image exactly.
    t = time.monotonic()
    await cow_copy(vm.host_dir / "rootfs.ext4", directory / SnapshotFiles.DISK)
    await cow_copy(vm.host_dir / "config.disk", directory / SnapshotFiles.CONFIG)
    vm.timings["snapshot_disk_copy"] = time.monotonic() - t
    spec = vm.spec
    meta = {
        "firecracker_version": fcbin.VERSION, "source_instance": spec.instance_id,
        "image": str(spec.image), "golden_token": spec.agent_token,
        "boot_phases": dict(boot_phases), "created_at": time.time(),
        "vm_dir": str(vm.seen("")),
        "drives": {"rootfs": str(vm.seen("rootfs.ext4")), "config": str(vm.seen("config.disk"))},
        "vsock": {
            "guest_cid": vm.guest_cid, "uds_path": str(vm.seen("v.sock")),
            "agent_port": vm.agent_port,
        },
        "network": vm.network_on, "memory_mib": spec.memory_mib, "vcpus": spec.vcpus,
        "jail": vm.jail is not None,
    }  # fmt: skip
    return write_meta(directory, meta)
