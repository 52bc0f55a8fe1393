"""Fixtures for the QEMU tests, shared per module: one golden cold boot serves every clone.

Under software emulation (this host: kvm-pvm, no VT-x) a cold boot costs
~20 s, a restore well under a second; so each module boots the golden VM
once (``golden``), snapshots it, and every test restores its own clones.

- ``vm_image``: the test image and its VM artifacts (built once per machine).
- ``oauth``: the test bed's OAuth server; the guest reaches it through a
  forward at ``http://10.0.2.100:PORT`` (``GuestForward``).
- ``qlab``: a ``QemuBackend`` on a short private state root; every instance
  it made is destroyed at the end and verified gone (processes, state dirs,
  overlays, ports); if a test of the module failed, the consoles still there
  are saved first (``tests/vmm/lab.py``).
- ``golden``: the golden snapshot (its agent has the test bed's two URLs).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from remotecli.images.build import ensure_test_image
from remotecli.images.vm import ensure_vm_artifacts
from remotecli.testbed import TESTBED_URL_ENV, OAuthServer
from remotecli.testbed.fake_clis.common import API_ENV
from remotecli.vmm.base import Snapshot
from remotecli.vmm.qemu.backend import QEMU, GuestForward, QemuBackend
from tests.vmm.lab import failed
from tests.vmm.qemu.lab import QemuLab, VmImage


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"  # module-wide: the golden VM and its clones live in one event loop


@pytest.fixture(scope="session")
def vm_image() -> VmImage:
    if shutil.which(QEMU) is None:
        pytest.skip(f"no {QEMU} on PATH (apt-get install qemu-system-x86 qemu-utils)")
    if shutil.which("qemu-img") is None:
        pytest.skip("no qemu-img on PATH (apt-get install qemu-utils)")
    image = ensure_test_image()
    return VmImage(image, asyncio.run(ensure_vm_artifacts(image)))


@pytest.fixture(scope="module")
def oauth() -> Iterator[OAuthServer]:
    with OAuthServer(device_interval=0.2) as server:
        yield server


@pytest.fixture(scope="module")
async def qlab(
    vm_image: VmImage,
    oauth: OAuthServer,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    anyio_backend: str,
) -> AsyncIterator[QemuLab]:
    port = int(oauth.url.rsplit(":", 1)[1])
    with tempfile.TemporaryDirectory(prefix="rq-") as tmp:  # short: socket paths < 108 bytes
        root = Path(tmp) / "state"
        root.mkdir()
        lab = QemuLab(
            QemuBackend(root, forwards=(GuestForward(port),)), vm_image.image.rootfs, oauth
        )
        try:
            yield lab
        finally:
            consoles = tmp_path_factory.mktemp("consoles")
            problems = await lab.close(failed=failed(request), save_to=consoles)
            assert problems == [], f"left behind: {problems}"


@pytest.fixture(scope="module")
async def golden(qlab: QemuLab, anyio_backend: str) -> AsyncIterator[Snapshot]:
    """The golden snapshot: one cold boot to AGENT_READY, saved; its agent knows the test bed."""
    forward = qlab.backend.forwards[0]
    env = {TESTBED_URL_ENV: qlab.server.url, API_ENV: forward.guest_url}
    with tempfile.TemporaryDirectory(prefix="rq-snap-") as tmp:
        spec = qlab.spec("golden", agent_env=env)
        qlab.others.append(spec.instance_id)
        yield await qlab.backend.create_snapshot(spec, Path(tmp) / "golden")
