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
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from remotecli.images.build import ensure_test_image
from remotecli.images.store import Image
from remotecli.images.vm import VmArtifacts, ensure_vm_artifacts
from remotecli.testbed import TESTBED_URL_ENV, OAuthServer
from remotecli.testbed.fake_clis.common import API_ENV
from remotecli.vmm.base import InstanceSpec, Snapshot
from remotecli.vmm.qemu.backend import QEMU, GuestForward, QemuBackend, QemuInstance
from tests.support import procfs
from tests.vmm.lab import failed, teardown


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"  # module-wide: the golden VM and its clones live in one event loop


@dataclass(frozen=True)
class VmImage:
    image: Image
    artifacts: VmArtifacts


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


def find_leftovers(instance_ids: list[str], ports: list[int]) -> list[str]:
    """Processes naming an instance, and ports still listening (after destroy)."""
    found = [
        f"pid {p.pid}: {p.cmdline[:120]}" for p in procfs.processes() for i in instance_ids
        if p.names(i)
    ]  # fmt: skip
    listening = Path("/proc/net/tcp").read_text()
    found += [
        f"port {p} listens" for p in ports if f"0100007F:{p:04X} 00000000:0000 0A" in listening
    ]
    return found


@dataclass
class QemuLab:
    backend: QemuBackend
    image: Path
    server: OAuthServer
    created: list[QemuInstance] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)
    #: Instance ids made inside the backend (the golden VM of create_snapshot).
    others: list[str] = field(default_factory=list)

    def spec(self, name: str, **kwargs: object) -> InstanceSpec:
        return InstanceSpec(
            image=self.image, instance_id=f"{name}-{secrets.token_hex(3)}",
            agent_token=secrets.token_urlsafe(24), **kwargs,  # type: ignore[arg-type]
        )  # fmt: skip

    def track(self, instance: QemuInstance) -> QemuInstance:
        self.created.append(instance)
        return instance

    async def restore(self, name: str, snapshot: Snapshot) -> QemuInstance:
        clone = self.track(self.backend.restore(self.spec(name), snapshot))
        await clone.start()
        self.ports.append(clone.host_port)
        await clone.wait_ready()
        return clone

    async def close(self, *, failed: bool, save_to: Path) -> list[str]:
        problems = await teardown(self.created, failed=failed, save_to=save_to)
        names = [i.name for i in self.created] + [f"remotecli-{i}" for i in self.others]
        problems += find_leftovers(names, self.ports)
        problems += [str(p) for p in self.backend.state_root.iterdir()]
        return problems


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
