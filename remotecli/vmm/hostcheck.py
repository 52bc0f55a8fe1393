"""Which backends can this host run, and why not the others (``remotecli doctor``).

Pure functions over a ``HostReader`` so tests feed them the files of real
hosts (this one: kvm-pvm, no vmx/svm; a KVM host: svm, /dev/kvm) without
touching the machine they run on. ``LiveHost`` reads the real files.

The preference when nothing is configured: firecracker > qemu with KVM >
nspawn > fake. QEMU without KVM (software emulation) can run but is never
picked: a boot takes minutes.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

#: ioctl(KVM_GET_API_VERSION); every KVM since 2.6.22 answers 12.
KVM_GET_API_VERSION = 0xAE00
KVM_API_VERSION = 12
BINARIES = ("firecracker", "qemu-system-x86_64", "systemd-nspawn", "nsenter", "unshare")
PREFERENCE = ("firecracker", "qemu", "nspawn", "fake")
NSPAWN_ISOLATION_NOTE = (
    "nspawn is weaker isolation than a VM: containers share the host kernel, so a "
    "kernel exploit in one reaches the host and every other user. Use firecracker "
    "(or qemu with KVM) on hosts with VT-x/AMD-V."
)


class HostReader(Protocol):
    def read_text(self, path: str) -> str | None:
        """The file's text, or None when it does not exist or cannot be read."""
        ...

    def exists(self, path: str) -> bool: ...

    def which(self, name: str) -> str | None: ...

    def is_root(self) -> bool: ...

    def kvm_api_version(self) -> int | str:
        """KVM's API version from /dev/kvm, or why it could not be asked."""
        ...


class LiveHost:
    """The machine we run on."""

    def read_text(self, path: str) -> str | None:
        try:
            return Path(path).read_text()
        except OSError:
            return None

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def which(self, name: str) -> str | None:
        found = shutil.which(name)
        if found is None and name in ("firecracker", "jailer"):
            # The pinned copy `python -m remotecli.vmm.firecracker install` puts in the cache.
            from remotecli.vmm.firecracker import binaries as fcbin

            pinned = fcbin.find(name)
            return str(pinned) if pinned else None
        return found

    def is_root(self) -> bool:
        return os.geteuid() == 0

    def kvm_api_version(self) -> int | str:
        try:
            fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            return f"cannot open /dev/kvm: {exc.strerror}"
        try:
            return fcntl.ioctl(fd, KVM_GET_API_VERSION)
        except OSError as exc:
            return f"/dev/kvm does not answer KVM_GET_API_VERSION: {exc.strerror}"
        finally:
            os.close(fd)


@dataclass(frozen=True)
class HostFacts:
    cpu_flags: frozenset[str]
    kvm_present: bool
    kvm_api: int | str  # the version, or why it could not be read
    kvm_pvm: bool
    binaries: Mapping[str, str | None]
    root: bool
    cgroups: str  # "unified" | "hybrid" | "legacy" | "missing"
    overlayfs: bool
    pid1: str

    @property
    def hardware_virt(self) -> bool:
        return bool({"vmx", "svm"} & self.cpu_flags)

    @property
    def kvm_usable(self) -> bool:
        """/dev/kvm answers and is backed by VT-x/AMD-V (not kvm-pvm's shadow paging)."""
        return self.kvm_api == KVM_API_VERSION and self.hardware_virt and not self.kvm_pvm


@dataclass(frozen=True)
class BackendCheck:
    name: str
    can_run: bool
    isolation: str
    reasons: tuple[str, ...]
    #: Whether ``make up`` may choose it (QEMU under software emulation runs, but too slowly).
    pickable: bool = True


def cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The first ``flags`` line of /proc/cpuinfo (all CPUs of a host share them)."""
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def cgroup_layout(reader: HostReader) -> str:
    """``unified`` (cgroup v2 only), ``hybrid`` (v1 + v2 at /sys/fs/cgroup/unified), ..."""
    if reader.exists("/sys/fs/cgroup/cgroup.controllers"):
        return "unified"
    if reader.exists("/sys/fs/cgroup/unified/cgroup.procs"):
        return "hybrid"
    if reader.exists("/sys/fs/cgroup/systemd") or reader.exists("/sys/fs/cgroup/memory"):
        return "legacy"
    return "missing"


def gather(reader: HostReader | None = None) -> HostFacts:
    reader = reader or LiveHost()
    kvm_present = reader.exists("/dev/kvm")
    filesystems = reader.read_text("/proc/filesystems") or ""
    return HostFacts(
        cpu_flags=cpu_flags(reader.read_text("/proc/cpuinfo") or ""),
        kvm_present=kvm_present,
        kvm_api=reader.kvm_api_version() if kvm_present else "no /dev/kvm",
        kvm_pvm=reader.exists("/sys/module/kvm_pvm"),
        binaries={name: reader.which(name) for name in BINARIES},
        root=reader.is_root(),
        cgroups=cgroup_layout(reader),
        overlayfs=any(line.split()[-1:] == ["overlay"] for line in filesystems.splitlines()),
        pid1=(reader.read_text("/proc/1/comm") or "?").strip(),
    )


def _kvm_problems(facts: HostFacts) -> list[str]:
    problems = []
    if facts.kvm_pvm:
        problems.append("kvm-pvm: VM guests are unusably slow here (/sys/module/kvm_pvm)")
    if not facts.hardware_virt:
        problems.append("no vmx/svm in /proc/cpuinfo: the CPU exposes no VT-x/AMD-V")
    if not facts.kvm_present:
        problems.append("no /dev/kvm")
    elif facts.kvm_api != KVM_API_VERSION:
        problems.append(f"/dev/kvm unusable: {facts.kvm_api}")
    return problems


def assess(facts: HostFacts) -> list[BackendCheck]:
    """One verdict per backend, in preference order, each with its reasons."""
    kvm = _kvm_problems(facts)
    fc_missing = (
        []
        if facts.binaries.get("firecracker")
        else [
            "no firecracker on PATH or in the cache (python -m remotecli.vmm.firecracker install)"
        ]
    )
    firecracker = BackendCheck(
        "firecracker", not kvm and not fc_missing, "vm",
        tuple(kvm + fc_missing) or ("KVM with hardware virtualization, firecracker found",),
    )  # fmt: skip
    if not facts.binaries.get("qemu-system-x86_64"):
        qemu = BackendCheck("qemu", False, "vm", ("no qemu-system-x86_64 on PATH",))
    elif kvm:
        qemu = BackendCheck(
            "qemu", True, "vm",
            (
                "software emulation only (TCG): a cold boot takes ~20 s, so auto never "
                "picks it; REMOTECLI_BACKEND=qemu uses it",
                *kvm,
            ),
            pickable=False,
        )  # fmt: skip
    else:
        qemu = BackendCheck("qemu", True, "vm", ("qemu-system-x86_64 with KVM",))
    nspawn_problems = [
        f"no {name} on PATH"
        for name in ("systemd-nspawn", "nsenter", "unshare")
        if not facts.binaries.get(name)
    ]
    if not facts.root:
        nspawn_problems.append("needs root (containers, cgroups and overlay mounts)")
    if facts.cgroups not in ("unified", "hybrid"):
        nspawn_problems.append(f"no cgroup v2 hierarchy (cgroups: {facts.cgroups})")
    if not facts.overlayfs:
        nspawn_problems.append("the kernel has no overlay filesystem")
    nspawn_ok = (
        f"systemd-nspawn found, root, cgroups {facts.cgroups}, overlayfs; "
        f"PID 1 is {facts.pid1!r} (containers run unregistered, --keep-unit)"
    )
    nspawn = BackendCheck(
        "nspawn", not nspawn_problems, "container", tuple(nspawn_problems) or (nspawn_ok,)
    )
    fake = BackendCheck(
        "fake", True, "none", ("the agent as a host process: control-plane tests only",)
    )
    return [firecracker, qemu, nspawn, fake]


def pick(checks: list[BackendCheck]) -> BackendCheck:
    """The backend ``make up`` uses: the first in PREFERENCE that runs (qemu only with KVM)."""
    by_name = {c.name: c for c in checks}
    for name in PREFERENCE:
        check = by_name.get(name)
        if check is not None and check.can_run and check.pickable:
            return check
    return by_name["fake"]


def unified_root(layout: str) -> Path | None:
    """Where cgroup v2 is mounted on this layout (None when there is none)."""
    return {"unified": Path("/sys/fs/cgroup"), "hybrid": Path("/sys/fs/cgroup/unified")}.get(layout)


def named_systemd_root(layout: str) -> Path | None:
    """The v1 ``name=systemd`` hierarchy nspawn mirrors its cgroups into on hybrid hosts."""
    return Path("/sys/fs/cgroup/systemd") if layout == "hybrid" else None
