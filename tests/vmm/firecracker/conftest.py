"""Fixtures for the Firecracker tests: the real binary, a kernel, a factory that owns cleanup.

- ``fc_binary``: ``firecracker`` from PATH or the cache (``fcbin install``); skips
  without it or without /dev/kvm.
- ``small_artifacts``: a guest that needs no image build: the golden image's VM
  kernel when its artifacts are cached, else none (skip), with a 64 MiB empty
  ext4 disk (the API and snapshot tests never need a root filesystem).
- ``fc_lab``: instances on a private state root and ``vm_dir``; every instance
  is destroyed (and verified gone) after the test, its console saved first if
  the test failed (``tests/vmm/lab.py``). ``fc_lab.jail = True`` runs
  them under the real jailer (chroots below ``fc_lab.chroot_base``, uid/gid 65534).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from remotecli.vmm import hostcheck
from remotecli.vmm.base import Deadlines, InstanceSpec, Phase, VmArtifacts
from remotecli.vmm.firecracker import binaries as fcbin
from remotecli.vmm.firecracker.backend import FirecrackerBackend, FirecrackerInstance
from tests.vmm.lab import failed, teardown

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


@pytest.fixture(scope="session")
def fc_binary() -> Path:
    if not os.path.exists("/dev/kvm"):
        pytest.skip("no /dev/kvm")
    found = fcbin.find("firecracker")
    if found is None:
        pytest.skip("no firecracker binary: " + fcbin.INSTALL_HINT)
    return found


@pytest.fixture(scope="session")
def golden_vm() -> VmArtifacts:
    """The golden test image's VM artifacts (kernel, initrd, disk), built once and cached."""
    import asyncio

    from remotecli.images import vm
    from remotecli.images.build import ensure_test_image

    image = ensure_test_image()
    artifacts: VmArtifacts = asyncio.run(vm.ensure_vm_artifacts(image))
    return artifacts


@pytest.fixture(scope="session")
def small_disk() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="rcli-fc-disk-") as tmp:
        disk = Path(tmp) / "disk.ext4"
        subprocess.run(["truncate", "-s", "64M", str(disk)], check=True)
        subprocess.run(["mkfs.ext4", "-q", "-L", "remotecli-root", str(disk)], check=True)
        yield disk


@pytest.fixture(scope="session")
def small_artifacts(golden_vm: VmArtifacts, small_disk: Path) -> Artifacts:
    """The golden kernel with an empty disk: boots as far as this host lets it, quickly."""
    return Artifacts(small_disk, golden_vm.vmlinux, golden_vm.initrd, golden_vm.cmdline)


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


@pytest.fixture
async def fc_lab(
    fc_binary: Path,
    small_artifacts: Artifacts,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    anyio_backend: str,
) -> AsyncIterator[FcLab]:
    with tempfile.TemporaryDirectory(prefix="rfc-") as tmp:  # short: socket paths < 108 bytes
        lab = FcLab(Path(tmp), fc_binary, small_artifacts)
        try:
            yield lab
        finally:
            problems = await teardown(lab.created, failed=failed(request), save_to=tmp_path)
            left = sorted(p.name for p in (lab.root / "state").glob("*"))
            left += sorted(str(p) for p in (lab.chroot_base or lab.root / "j").glob("*/*"))
            if problems or left:
                pytest.fail(f"left behind: {problems} {left}")
