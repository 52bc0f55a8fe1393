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
from pathlib import Path

import pytest

from remotecli.vmm.base import VmArtifacts
from remotecli.vmm.firecracker import binaries as fcbin
from tests.vmm.firecracker.lab import Artifacts, FcLab
from tests.vmm.lab import failed, teardown


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
