"""Firecracker's jailer: a chroot, an unprivileged uid/gid, cgroup limits and the VM's netns.

``FirecrackerBackend(jailer=True, uid=..., gid=..., chroot_base=...)`` starts
each VM as (no ``--daemonize``: the process stays our child, in its own
session, its stdout/stderr going to the console log; no ``--new-pid-ns``: the
jailer execs firecracker in place, so our child's pid *is* firecracker's)::

    jailer --id remotecli-ID --exec-file FIRECRACKER --uid U --gid G
        --chroot-base-dir BASE --cgroup-version 1|2 --parent-cgroup remotecli-fc
        [--cgroup memory...=... --cgroup cpu...=...] [--netns /run/netns/remotecli-ID]
        -- --api-sock /api.sock --log-path /firecracker.log --level Info --show-level

The jailer copies firecracker into ``BASE/firecracker/remotecli-ID/root``
(the *chroot*), makes /dev/kvm, /dev/net/tun, /dev/urandom and
/dev/userfaultfd there, writes the cgroup values and joins them, joins the
netns, pivots into the chroot in a mount namespace of its own (nothing is
mounted in ours), drops to U:G and execs firecracker. Before that we put
into the chroot what firecracker opens (``place``)::

    root/                 0700 U:G (the jailer chowns it)
        vmlinux, initrd.img   hard links when on the chroot's filesystem and
                              readable by U/G as they are, else copies owned by U:G
        vmstate, memory       the same (restores)
        rootfs.ext4           this VM's own copy (0600 U:G): firecracker writes it
        config.disk           0600 U:G
        firecracker.log       0600 U:G (--log-path)
        api.sock, v.sock      made by firecracker

The chroot plays the role of the unjailed backend's ``vm_dir``: firecracker
sees ``/rootfs.ext4`` and ``/v.sock``, so a snapshot records those, and a clone
restored in its own chroot opens its own disk and binds its own vsock.

**Cgroups.** Version 2 on unified hosts, 1 on hybrid/legacy ones (the jailer's
v2 needs the controllers in the v2 tree; on a hybrid host they are all bound
to v1: "Controller cpuset is unavailable"). Limits: memory =
``memory_mib + memory_overhead_mib`` (v1 ``memory.limit_in_bytes``, v2
``memory.max``) and CPU = ``vcpus`` whole CPUs (v1 ``cpu.cfs_quota_us`` over
``cpu.cfs_period_us``, v2 ``cpu.max``), each only where its controller is
available. The jailer makes ``<controller root>/remotecli-fc/remotecli-ID``
and leaves it when firecracker exits: ``remove`` deletes it. The shared parent
``remotecli-fc`` stays (removing it would race with another VM's jailer).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from remotecli.errors import VmError
from remotecli.images.store import cache_dir
from remotecli.vmm import hostcheck, statedir

PARENT_CGROUP = "remotecli-fc"
#: Firecracker's own memory (a few MiB), its page tables and the page cache of the
#: files it reads and writes (snapshot memory) on top of guest RAM.
MEMORY_OVERHEAD_MIB = 64
CPU_PERIOD_US = 100_000
#: The highest uid/gid the kernel accepts; (uid_t)-1 means "unchanged" to setuid.
MAX_ID = 2**32 - 2
CONTROLLERS = ("memory", "cpu")


def default_chroot_base() -> Path:
    """Beside the VM artifacts and snapshots, so kernels and snapshot memory hard-link."""
    return cache_dir() / "jail"


def check_ids(uid: int, gid: int) -> None:
    for name, value in (("uid", uid), ("gid", gid)):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_ID:
            raise VmError(f"jailer {name} {value!r} is not a number from 1 to {MAX_ID}")
        if value == 0:
            raise VmError(
                f"jailer {name} 0 would run firecracker as root: pick an unprivileged "
                "uid/gid (65534 = nobody, or one per VM)"
            )


def cgroup_version(layout: str) -> int | None:
    """The jailer's --cgroup-version for a host layout (``hostcheck.cgroup_layout``)."""
    return {"unified": 2, "hybrid": 1, "legacy": 1}.get(layout)


def v1_mount(controller: str, mounts: str) -> Path | None:
    """Where the v1 hierarchy holding ``controller`` is mounted (as the jailer finds it)."""
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) > 3 and fields[2] == "cgroup" and controller in fields[3].split(","):
            return Path(fields[1].replace("\\040", " "))
    return None


def limit_args(
    version: int, memory_mib: int, vcpus: int, overhead_mib: int
) -> dict[str, list[str]]:
    """``--cgroup`` values by controller: the memory and CPU limits for one VM."""
    memory = (memory_mib + overhead_mib) << 20
    quota = vcpus * CPU_PERIOD_US
    if version == 1:
        return {
            "memory": [f"memory.limit_in_bytes={memory}"],
            "cpu": [f"cpu.cfs_period_us={CPU_PERIOD_US}", f"cpu.cfs_quota_us={quota}"],
        }
    return {"memory": [f"memory.max={memory}"], "cpu": [f"cpu.max={quota} {CPU_PERIOD_US}"]}


@dataclass(frozen=True)
class JailConfig:
    """The backend's jail settings (``FirecrackerBackend(jailer=True, ...)``)."""

    uid: int = 65534
    gid: int = 65534
    chroot_base: Path = field(default_factory=default_chroot_base)
    #: None: the host's (2 on unified hosts, 1 on hybrid/legacy, no cgroups without any).
    cgroup_version: int | None = None
    limits: bool = True
    memory_overhead_mib: int = MEMORY_OVERHEAD_MIB

    def __post_init__(self) -> None:
        check_ids(self.uid, self.gid)


@dataclass
class Jail:
    """One VM's chroot and cgroups; ``to_meta``/``from_meta`` let a restarted controller reap it."""

    config: JailConfig
    vm_id: str
    #: The basename of the firecracker binary: the jailer names the chroot after it.
    exec_name: str = "firecracker"
    version: int | None = None
    #: The cgroup directories the jailer makes (it never removes them).
    cgroup_dirs: list[Path] = field(default_factory=list)
    #: ``--cgroup`` arguments; limits the host cannot apply are in ``skipped``.
    cgroup_args: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    #: How each file got into the chroot: "link" or "copy".
    placed: dict[str, str] = field(default_factory=dict)

    @property
    def top(self) -> Path:
        return self.config.chroot_base / self.exec_name / self.vm_id

    @property
    def root(self) -> Path:
        return self.top / "root"

    def plan_cgroups(self, memory_mib: int, vcpus: int) -> None:
        """Choose the cgroup version and the limits this host allows; record the dirs."""
        layout = hostcheck.cgroup_layout(hostcheck.LiveHost())
        self.version = self.config.cgroup_version or cgroup_version(layout)
        if not self.config.limits or self.version is None:
            return
        wanted = limit_args(self.version, memory_mib, vcpus, self.config.memory_overhead_mib)
        mounts = Path("/proc/mounts").read_text()
        unified = hostcheck.unified_root(layout)
        for controller, args in wanted.items():
            if self.version == 1:
                where = v1_mount(controller, mounts)
            elif unified is not None and controller in _v2_controllers(unified):
                where = unified
            else:
                where = None
            if where is None:
                self.skipped[controller] = f"no {controller} controller in cgroup v{self.version}"
                continue
            self.cgroup_args += args
            if where / PARENT_CGROUP / self.vm_id not in self.cgroup_dirs:
                self.cgroup_dirs.append(where / PARENT_CGROUP / self.vm_id)

    def create(self) -> None:
        """The empty chroot; refuses one that exists (a VM with this id runs or was left)."""
        statedir.create_private(
            self.top, self.root.name, socket=self.root / "api.sock",
            too_long=f"the jail's sockets under {self.root} would be longer than a Unix socket "
            f"path may be ({statedir.UNIX_PATH_MAX - 1} bytes): use a shorter chroot_base or "
            "instance id",
            taken=f"jail {self.top} already exists: a VM with this id runs or was left behind; "
            "reap it first (backend.reap)",
        )  # fmt: skip

    def place(self, src: Path, name: str) -> Path:
        """``src`` at ``root/name`` for reading: a hard link if firecracker can read it as it
        is and it is on the chroot's filesystem (never chowned: that would change the
        original), else a copy owned by the jail's uid/gid."""
        dst = self.root / name
        st = src.stat()
        if st.st_dev == self.root.stat().st_dev and self._can_read(st):
            os.link(src, dst)
            self.placed[name] = "link"
        else:
            shutil.copyfile(src, dst)
            self.own(dst)
            self.placed[name] = "copy"
        return dst

    def stage(self, inputs: tuple[Path, Path | None], names: tuple[str, str]) -> (
        tuple[Path, Path | None]
    ):  # fmt: skip
        """``place`` what firecracker reads (kernel + initrd, or vmstate + memory) and make
        its log; returns the paths it sees."""
        seen = [None if src is None else Path("/") / self.place(src, n).name
                for src, n in zip(inputs, names, strict=True)]  # fmt: skip
        (self.root / "firecracker.log").touch()
        self.own(self.root / "firecracker.log")
        assert seen[0] is not None
        return seen[0], seen[1]

    def own(self, path: Path, mode: int = 0o600) -> None:
        """A file firecracker writes (disk, log) or only it should read (config disk)."""
        os.chown(path, self.config.uid, self.config.gid)
        os.chmod(path, mode)

    def argv(self, jailer: Path, firecracker: Path, netns: Path | None, fc_args: list[str]) -> (
        list[str]
    ):  # fmt: skip
        argv = [
            str(jailer), "--id", self.vm_id, "--exec-file", str(firecracker),
            "--uid", str(self.config.uid), "--gid", str(self.config.gid),
            "--chroot-base-dir", str(self.config.chroot_base),
        ]  # fmt: skip
        if self.version is not None:
            argv += ["--cgroup-version", str(self.version), "--parent-cgroup", PARENT_CGROUP]
        for arg in self.cgroup_args:
            argv += ["--cgroup", arg]
        if netns is not None:
            argv += ["--netns", str(netns)]
        return [*argv, "--", *fc_args]

    async def remove(self, timeout: float = 5.0) -> None:
        """The chroot (hard links only drop a link count) and the cgroup dirs. Idempotent."""
        shutil.rmtree(self.top, ignore_errors=True)
        end = time.monotonic() + timeout
        while True:
            # An exiting process can keep its cgroup populated for a moment: EBUSY, retry.
            if not self._rmdir_cgroups() or time.monotonic() > end:
                return
            await asyncio.sleep(0.02)

    def leftovers(self) -> list[str]:
        problems = [f"jail {self.top}"] if self.top.exists() else []
        return problems + [f"cgroup {d}" for d in self.cgroup_dirs if d.exists()]

    def to_meta(self) -> dict[str, Any]:
        return {
            "uid": self.config.uid, "gid": self.config.gid,
            "chroot_base": str(self.config.chroot_base), "exec_name": self.exec_name,
            "version": self.version, "cgroup_dirs": [str(d) for d in self.cgroup_dirs],
        }  # fmt: skip

    @classmethod
    def from_meta(cls, meta: dict[str, Any], vm_id: str) -> Jail:
        config = JailConfig(int(meta["uid"]), int(meta["gid"]), Path(meta["chroot_base"]))
        return cls(
            config, vm_id, str(meta.get("exec_name") or "firecracker"), meta.get("version"),
            [Path(d) for d in meta.get("cgroup_dirs") or []],
        )  # fmt: skip

    def _can_read(self, st: os.stat_result) -> bool:
        mode = stat.S_IMODE(st.st_mode)
        return bool(
            (st.st_uid == self.config.uid and mode & 0o400)
            or (st.st_gid == self.config.gid and mode & 0o040)
            or mode & 0o004
        )

    def _rmdir_cgroups(self) -> bool:
        """Whether any cgroup dir is still busy."""
        busy = False
        for directory in self.cgroup_dirs:
            try:
                directory.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                busy = True
        return busy


def jailed_ids(config: JailConfig, exec_name: str, prefix: str) -> set[str]:
    """Instance ids with a chroot under ``config.chroot_base`` (VMs named ``prefix + id``)."""
    jails = config.chroot_base / exec_name
    if not jails.is_dir():
        return set()
    return {p.name.removeprefix(prefix) for p in jails.iterdir() if p.name.startswith(prefix)}


def _v2_controllers(root: Path) -> list[str]:
    try:
        return (root / "cgroup.controllers").read_text().split()
    except OSError:
        return []
