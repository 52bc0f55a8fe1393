"""Which backend and which golden image the controller's VMs run on, from the settings.

- ``backend = "auto"``: the best backend ``remotecli doctor`` finds
  (firecracker, then qemu with KVM, then nspawn; QEMU under software
  emulation is never picked automatically). In production the fake backend
  is never picked (it isolates nothing): no isolating backend is an error.
- ``backend = "firecracker" | "qemu" | "nspawn" | "fake"``: that one, or an
  error saying why this host cannot run it.
- The image: ``settings.image``; else, in demo/test mode, the test image
  (built on first use, ~1 min); else the newest sealed image with real CLIs.
  The fake backend needs none (it runs the agent from this checkout).
- The VM backends (qemu, firecracker) are handed the loader of the image's VM
  artifacts (``vmm/artifacts.py``: built on an instance's first boot, then cached).

Instances keep their host-side files under ``<state_dir>/<backend>/<instance>``:
one root per backend, so each backend only ever lists and reaps its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from remotecli.controller.settings import Settings
from remotecli.errors import BackendUnavailable, ImageError
from remotecli.images.build import ensure_test_image
from remotecli.images.store import MANIFEST, ROOTFS, list_images, load_image
from remotecli.vmm import hostcheck, statedir
from remotecli.vmm.artifacts import golden_artifacts
from remotecli.vmm.base import Backend
from remotecli.vmm.fake.backend import FakeBackend
from remotecli.vmm.firecracker.backend import FirecrackerBackend
from remotecli.vmm.nspawn.backend import NspawnBackend
from remotecli.vmm.qemu.backend import GuestForward, QemuBackend

log = logging.getLogger("remotecli.controller.fleet.runtime")

IMPLEMENTED = ("firecracker", "qemu", "nspawn", "fake")
#: What follows the state root in the longest path we make: the agent's socket.
SOCKET_SUFFIX = "/vm-0123456789abcdef/run/agent.sock"


@dataclass(frozen=True)
class Runtime:
    backend: Backend
    image_rootfs: Path
    #: Why this backend (shown in logs and by the API).
    reason: str
    #: Other backends whose instances a previous run may have left on this host.
    stale: tuple[Backend, ...] = ()
    #: ``ENV_NAME=URL`` for each guest service, as the guests reach it.
    agent_env: Mapping[str, str] = field(default_factory=dict)


def demo_or_test(settings: Settings) -> bool:
    return settings.demo or settings.environment == "test"


def state_root(settings: Settings, backend: str) -> Path:
    root = (settings.state_dir / backend).resolve()
    longest = len(str(root).encode()) + len(SOCKET_SUFFIX)
    if longest >= statedir.UNIX_PATH_MAX:
        raise BackendUnavailable(
            f"the state directory {settings.state_dir.resolve()} is too deep: the VMs' agent "
            f"sockets under it would need {longest} bytes, and a Unix socket path holds "
            f"{statedir.UNIX_PATH_MAX - 1}. Set REMOTECLI_STATE_DIR to a shorter path "
            "(e.g. /var/lib/remotecli-state)."
        )
    return root


def choose_backend(
    settings: Settings, checks: list[hostcheck.BackendCheck] | None = None
) -> tuple[str, str]:
    """The backend's name and why it was chosen; raises ``BackendUnavailable`` with the reasons."""
    checks = checks if checks is not None else hostcheck.assess(hostcheck.gather())
    by_name = {c.name: c for c in checks}
    if settings.backend != "auto":
        check = by_name[settings.backend]
        if not check.can_run:
            raise BackendUnavailable(
                f"REMOTECLI_BACKEND={settings.backend} cannot run on this host: "
                f"{'; '.join(check.reasons)}. Run `remotecli doctor` to see what can, or "
                "set REMOTECLI_BACKEND=auto."
            )
        return check.name, f"configured (REMOTECLI_BACKEND={settings.backend})"
    picked = hostcheck.pick([c for c in checks if c.name in IMPLEMENTED])
    if picked.name == "fake" and settings.environment == "production":
        why = ". ".join(
            f"{name}: {'; '.join(by_name[name].reasons)}"
            for name in ("firecracker", "qemu", "nspawn")
            if name in by_name
        )
        raise BackendUnavailable(
            "no isolating VM backend can run on this host, and production refuses the fake "
            f"backend (it runs agents as host processes). {why}. "
            "Run `remotecli doctor` for every backend's requirements."
        )
    return picked.name, f"auto: {'; '.join(picked.reasons)}"


def guest_urls(name: str, services: Mapping[str, int]) -> dict[str, str]:
    """Where a guest of backend ``name`` reaches each host loopback service."""
    if name == "qemu":
        return {env: GuestForward(port).guest_url for env, port in services.items()}
    # nspawn: the demo serves inside each container at the same address; fake:
    # the host's loopback. Firecracker VMs have no forward (no host services).
    return {env: f"http://127.0.0.1:{port}" for env, port in services.items()}


def make_backend(
    name: str,
    settings: Settings,
    guest_services: Mapping[str, int] | None = None,
    fake_cli_dir: Path | None = None,
) -> Backend:
    root = state_root(settings, name)
    if name == "nspawn":
        return NspawnBackend(root)
    if name == "qemu":
        ports = sorted(set((guest_services or {}).values()))
        return QemuBackend(
            root, artifacts=golden_artifacts, forwards=[GuestForward(p) for p in ports]
        )
    if name == "firecracker":
        jailer = settings.firecracker_jailer
        if jailer is None:
            jailer = settings.environment == "production"
        return FirecrackerBackend(root, artifacts=golden_artifacts, jailer=jailer)
    if name == "fake":
        # The fake backend runs the agent on this host: with the CLIs the composition
        # root hands it (the test bed's fakes in demo/test mode), else those on PATH.
        return FakeBackend(root, cli_path=fake_cli_dir)
    raise BackendUnavailable(f"the {name} backend is not implemented yet (have: {IMPLEMENTED})")


def _load(path: Path) -> Path:
    """An image directory (or its ``rootfs/``) → the verified rootfs."""
    if not (path / MANIFEST).exists() and path.name == ROOTFS:
        path = path.parent
    return load_image(path).rootfs


async def choose_image(settings: Settings, backend: str, cache: Path | None = None) -> Path:
    """The golden rootfs the backend boots; raises ``ImageError`` saying how to get one."""
    if backend == "fake":
        return Path("/")  # the fake backend runs the agent from this checkout: no image
    if settings.image is not None:
        return await asyncio.to_thread(_load, settings.image)
    if demo_or_test(settings):
        # Reused when built before (~ms); built otherwise (~1 min, needs root).
        image = await asyncio.to_thread(ensure_test_image, cache)
        return image.rootfs
    usable = [i for i in await asyncio.to_thread(list_images, cache) if not i.test_clis and i.clis]
    if not usable:
        raise ImageError(
            "no golden image with the real CLIs was found in the image cache. Build one: "
            "`remotecli image build --providers claude_code,codex,gemini_cli` (or set "
            "REMOTECLI_IMAGE to an image directory; REMOTECLI_DEMO=1 uses the offline test image)"
        )
    return await asyncio.to_thread(_load, usable[0].path)


async def build_runtime(
    settings: Settings,
    cache: Path | None = None,
    guest_services: Mapping[str, int] | None = None,
    fake_cli_dir: Path | None = None,
) -> Runtime:
    name, reason = choose_backend(settings)
    services = dict(guest_services or {})
    backend = make_backend(name, settings, services, fake_cli_dir)
    image = await choose_image(settings, name, cache)
    stale = []
    for other in IMPLEMENTED:
        if other != name and any(statedir.scan(state_root(settings, other))):
            stale.append(make_backend(other, settings, fake_cli_dir=fake_cli_dir))
    if backend.isolation == "fake":
        log.warning(
            "VMs run on the fake backend: agents are host processes, users are NOT isolated "
            "(%s)", reason,
        )  # fmt: skip
    else:
        log.info("VMs run on the %s backend (%s), image %s", name, reason, image)
    return Runtime(backend, image, reason, tuple(stale), guest_urls(name, services))
