"""The QEMU tests' lab: the image, a backend, its instances, and what a destroy may leave."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field, replace
from pathlib import Path

from remotecli.images.store import Image
from remotecli.images.vm import VmArtifacts
from remotecli.testbed import OAuthServer
from remotecli.vmm.base import InstanceSpec, Snapshot
from remotecli.vmm.qemu.backend import QemuBackend, QemuInstance
from tests.support import procfs
from tests.vmm.lab import teardown


@dataclass(frozen=True)
class VmImage:
    image: Image
    artifacts: VmArtifacts


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


@dataclass(frozen=True)
class Artifacts:
    directory: Path
    disk: Path
    vmlinuz: Path
    vmlinux: Path
    initrd: Path
    cmdline: str
    kernel_version: str


def backend_with(qlab: QemuLab, vm_image: VmImage, **changes: object) -> QemuBackend:
    real = vm_image.artifacts
    fake = replace(
        Artifacts(real.directory, real.disk, real.vmlinuz, real.vmlinux, real.initrd,
                  real.cmdline, real.kernel_version),
        **changes,  # type: ignore[arg-type]
    )  # fmt: skip

    async def artifacts(spec: InstanceSpec) -> Artifacts:
        return fake

    return QemuBackend(qlab.backend.state_root, artifacts=artifacts)
