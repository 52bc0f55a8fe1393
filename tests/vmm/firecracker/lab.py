"""The Firecracker tests' lab: a backend on the test's artifacts, its instances torn down."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from remotecli.vmm import hostcheck
from remotecli.vmm.base import Deadlines, InstanceSpec, Phase, VmArtifacts
from remotecli.vmm.firecracker import binaries as fcbin
from remotecli.vmm.firecracker.backend import FirecrackerBackend, FirecrackerInstance

NEEDS_HW_VIRT = "needs hardware virtualization (VT-x/AMD-V); this host: " + (
    "kvm-pvm" if hostcheck.gather().kvm_pvm else "no usable KVM"
)


def hardware_virt() -> bool:
    return hostcheck.gather().kvm_usable


@dataclass(frozen=True)
class Artifacts:
    """``base.VmArtifacts`` with files of the test's choosing (a small disk, a junk kernel)."""

    disk: Path
    vmlinux: Path
    initrd: Path | None
    cmdline: str
    #: Firecracker boots the ELF ``vmlinux`` and reads none of these.
    vmlinuz: Path = Path("/nonexistent/vmlinuz")
    kernel_version: str = ""
    directory: Path = Path("/nonexistent")


@dataclass
class FcLab:
    root: Path
    binary: Path
    artifacts: VmArtifacts | None
    network: bool = False
    extra_boot_args: str = ""
    jail: bool = False
    chroot_base: Path | None = None
    created: list[FirecrackerInstance] = field(default_factory=list)

    def backend(self, *, firecracker: Path | None = None, network: bool | None = None) -> (
        FirecrackerBackend
    ):  # fmt: skip
        arts = self.artifacts

        async def artifacts(spec: InstanceSpec) -> VmArtifacts:
            assert arts is not None
            return arts

        jailer = fcbin.find("jailer") if self.jail else None
        if self.jail and jailer is None:
            pytest.skip("no jailer binary: " + fcbin.INSTALL_HINT)
        return FirecrackerBackend(
            self.root / "state", artifacts=artifacts, firecracker=firecracker or self.binary,
            network=self.network if network is None else network, vm_dir=self.root / "vm",
            extra_boot_args=self.extra_boot_args, jailer=jailer or False,
            chroot_base=self.chroot_base or self.root / "j",
        )  # fmt: skip

    def spec(self, name: str, *, memory_mib: int = 128, deadlines: Deadlines | None = None) -> (
        InstanceSpec
    ):  # fmt: skip
        return InstanceSpec(
            image=Path("/"), instance_id=f"{name}-{os.urandom(3).hex()}",
            agent_token=os.urandom(18).hex(), memory_mib=memory_mib,
            deadlines=deadlines or Deadlines({p: 20.0 for p in Phase}),
        )  # fmt: skip

    def track(self, instance: FirecrackerInstance) -> FirecrackerInstance:
        self.created.append(instance)
        return instance

    async def start(self, name: str) -> FirecrackerInstance:
        instance = self.track(self.backend().create(self.spec(name)))
        await instance.start()
        return instance
