"""Backend detection over the files of real hosts: this one (kvm-pvm) and a KVM host."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from typer.testing import CliRunner

from remotecli.cli import app
from remotecli.vmm import hostcheck

FIXTURES = Path(__file__).parent / "fixtures"
#: This host: AMD EPYC guest, no svm exposed, /dev/kvm backed by kvm_pvm, hybrid cgroups.
THIS_HOST_CPUINFO = (FIXTURES / "cpuinfo_this_host.txt").read_text()
#: A bare-metal AMD Ryzen (from a public Linux bug report): svm, npt.
KVM_HOST_CPUINFO = (FIXTURES / "cpuinfo_kvm_host.txt").read_text()
NSPAWN_TOOLS = {n: f"/usr/bin/{n}" for n in ("systemd-nspawn", "nsenter", "unshare")}


@dataclass
class Host:
    """A HostReader over fixed facts."""

    cpuinfo: str
    paths: set[str] = field(default_factory=set)
    binaries: dict[str, str] = field(default_factory=dict)
    root: bool = True
    kvm: int | str = 12

    def read_text(self, path: str) -> str | None:
        return {
            "/proc/cpuinfo": self.cpuinfo,
            "/proc/filesystems": "nodev\tsysfs\nnodev\toverlay\n\text4\n",
            "/proc/1/comm": "process_api\n",
        }.get(path)

    def exists(self, path: str) -> bool:
        return path in self.paths

    def which(self, name: str) -> str | None:
        return self.binaries.get(name)

    def is_root(self) -> bool:
        return self.root

    def kvm_api_version(self) -> int | str:
        return self.kvm


def this_host(**changes: object) -> Host:
    host = Host(
        THIS_HOST_CPUINFO,
        {"/dev/kvm", "/sys/module/kvm_pvm", "/sys/fs/cgroup/unified/cgroup.procs"},
        dict(NSPAWN_TOOLS),
    )
    for key, value in changes.items():
        setattr(host, key, value)
    return host


def kvm_host(*extra_binaries: str) -> Host:
    return Host(
        KVM_HOST_CPUINFO,
        {"/dev/kvm", "/sys/fs/cgroup/cgroup.controllers"},
        {**NSPAWN_TOOLS, **{n: f"/usr/bin/{n}" for n in extra_binaries}},
    )


def verdicts(host: Host) -> dict[str, bool]:
    return {c.name: c.can_run for c in hostcheck.assess(hostcheck.gather(host))}


def reasons(host: Host, name: str) -> tuple[str, ...]:
    checks = hostcheck.assess(hostcheck.gather(host))
    return next(c.reasons for c in checks if c.name == name)


def test_cpu_flags_come_from_cpuinfo() -> None:
    this, kvm = hostcheck.cpu_flags(THIS_HOST_CPUINFO), hostcheck.cpu_flags(KVM_HOST_CPUINFO)

    assert ("svm" in this, "hypervisor" in this) == (False, True)
    assert ("svm" in kvm, "npt" in kvm) == (True, True)


def test_this_host_runs_nspawn_not_vms_and_says_why() -> None:
    host = this_host()
    facts = hostcheck.gather(host)

    assert verdicts(host) == {"firecracker": False, "qemu": False, "nspawn": True, "fake": True}
    assert (facts.cgroups, facts.kvm_usable) == ("hybrid", False)
    assert reasons(host, "firecracker")[:2] == (
        "kvm-pvm: VM guests are unusably slow here (/sys/module/kvm_pvm)",
        "no vmx/svm in /proc/cpuinfo: the CPU exposes no VT-x/AMD-V",
    )
    assert hostcheck.pick(hostcheck.assess(facts)).name == "nspawn"


def test_qemu_without_kvm_runs_but_is_never_picked() -> None:
    host = this_host(binaries={**NSPAWN_TOOLS, "qemu-system-x86_64": "/usr/bin/qemu"})
    checks = hostcheck.assess(hostcheck.gather(host))

    qemu = next(c for c in checks if c.name == "qemu")
    assert (qemu.can_run, qemu.pickable) == (True, False)
    assert qemu.reasons[0].startswith("software emulation only (TCG)")
    assert hostcheck.pick(checks).name == "nspawn"


def test_a_kvm_host_picks_firecracker_then_qemu() -> None:
    with_fc = hostcheck.assess(hostcheck.gather(kvm_host("firecracker", "qemu-system-x86_64")))
    qemu_only = hostcheck.assess(hostcheck.gather(kvm_host("qemu-system-x86_64")))

    assert hostcheck.pick(with_fc).name == "firecracker"
    assert hostcheck.pick(qemu_only).name == "qemu"
    assert next(c for c in qemu_only if c.name == "firecracker").reasons == (
        "no firecracker on PATH or in the cache (python -m remotecli.vmm.firecracker install)",
    )


def test_an_unusable_dev_kvm_is_reported_with_its_error() -> None:
    host = kvm_host("firecracker")
    host.kvm = "cannot open /dev/kvm: Permission denied"

    assert reasons(host, "firecracker") == (
        "/dev/kvm unusable: cannot open /dev/kvm: Permission denied",
    )


def test_without_root_or_cgroup2_nspawn_cannot_run_and_fake_remains() -> None:
    host = this_host(root=False, paths={"/sys/fs/cgroup/memory"})
    checks = hostcheck.assess(hostcheck.gather(host))

    assert reasons(host, "nspawn") == (
        "needs root (containers, cgroups and overlay mounts)",
        "no cgroup v2 hierarchy (cgroups: legacy)",
    )
    assert hostcheck.pick(checks).name == "fake"


def test_doctor_prints_every_backend_and_says_nspawn_is_weaker() -> None:
    result = CliRunner().invoke(app, ["doctor"], env={"COLUMNS": "200"})

    assert result.exit_code == 0, result.output
    for name in ("firecracker", "qemu", "nspawn", "fake", "make up would use:"):
        assert name in result.output
    assert "nspawn is weaker isolation than a VM" in result.output
