"""E2 and E3 against a real QEMU guest made by the controller's own backend configuration.

The backend comes from ``runtime.make_backend`` exactly as the controller
makes it: with a guest service (what only the offline demo registers) it
gets one explicit forward; without, none (E3, checked on the argv QEMU
would get). The guest then runs a fake CLI whose provider URL is that
forward: a relay on the host answers through it (the control), or redirects
the CLI to the host's loopback as slirp names it (10.0.2.2), to the guest's
idea of 127.0.0.1, and to each of the host's own addresses, where a trap
listens. Nothing may arrive (E2). See tests/security/probe.py.
"""

from __future__ import annotations

import secrets
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from remotecli.agentclient import AgentClient
from remotecli.controller.runtime import make_backend
from remotecli.controller.settings import Settings
from remotecli.testbed import TESTBED_URL_ENV
from remotecli.vmm.base import InstanceSpec
from remotecli.vmm.qemu import FORWARD_ADDR, QemuBackend, QemuInstance
from tests.security.probe import (
    check_reach,
    give_claude_credentials,
    host_addresses,
    relay_on,
    trap,
)
from tests.vmm.lab import failed, teardown
from tests.vmm.qemu.conftest import VmImage, find_leftovers

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(300)]

#: slirp's name for the host's loopback (reachable without ``restrict=on``).
SLIRP_HOST = "10.0.2.2"


@pytest.fixture
def settings() -> Iterator[Settings]:
    path = Path(tempfile.mkdtemp(prefix="rq-sec-"))  # short: socket paths < 108 bytes
    yield Settings(environment="test", state_dir=path, backend="qemu", warm_pool_auth=0)
    shutil.rmtree(path, ignore_errors=True)


def qemu_backend(settings: Settings, services: dict[str, int] | None = None) -> QemuBackend:
    backend = make_backend("qemu", settings, services)
    assert isinstance(backend, QemuBackend), backend
    return backend


def netdev_of(instance: QemuInstance) -> str:
    """The ``-netdev`` QEMU would get (the machine as a cold boot would fill it in)."""
    if not instance.machine:
        instance.machine = {
            "accel": "tcg", "memory_mib": 512, "vcpus": 1, "kernel": "k", "initrd": "i",
            "append": "",
        }  # fmt: skip
        instance.host_port = 12345
    argv = instance.launch_argv()
    return argv[argv.index("-netdev") + 1]


def running_netdev(instance: QemuInstance) -> str:
    """The ``-netdev`` of the QEMU process that really runs."""
    argv = Path(f"/proc/{instance.pid}/cmdline").read_bytes().decode().split("\0")
    return argv[argv.index("-netdev") + 1]


def spec(rootfs: Path, env: dict[str, str]) -> InstanceSpec:
    return InstanceSpec(
        image=rootfs,
        instance_id=f"iso-{secrets.token_hex(3)}",
        agent_token=secrets.token_urlsafe(24),
        agent_env=env,
    )


def test_without_the_demo_the_controllers_qemu_vms_get_no_forward(
    vm_image: VmImage, settings: Settings
) -> None:
    plain = qemu_backend(settings).create(spec(vm_image.image.rootfs, {}))
    netdev = netdev_of(plain)
    assert "restrict=on" in netdev.split(","), netdev
    assert "guestfwd" not in netdev, f"a VM without the demo got a forward: {netdev}"
    demo = qemu_backend(settings, {"testbed": 4242}).create(spec(vm_image.image.rootfs, {}))
    forwards = [o for o in netdev_of(demo).split(",") if o.startswith("guestfwd=")]
    assert len(forwards) == 1 and "nc 127.0.0.1 4242" in forwards[0], netdev_of(demo)


async def test_a_guest_reaches_only_its_explicit_forward(
    vm_image: VmImage, settings: Settings, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    relay_socket = socket.create_server(("127.0.0.1", 0))
    relay_port = relay_socket.getsockname()[1]
    backend = qemu_backend(settings, {"relay": relay_port})
    env = {TESTBED_URL_ENV: f"http://{FORWARD_ADDR}:{relay_port}"}
    vm = backend.create(spec(vm_image.image.rootfs, env))
    try:
        with trap() as host, relay_on(relay_socket) as relay:
            await vm.start()
            await vm.wait_ready()
            netdev = running_netdev(vm).split(",")
            assert "restrict=on" in netdev, netdev
            assert [o for o in netdev if o.startswith("guestfwd=")] == [
                backend.forwards[0].netdev_option(shutil.which("busybox") or "busybox")
            ], netdev
            async with AgentClient(vm.agent_endpoint, vm.spec.agent_token) as agent:
                await give_claude_credentials(agent)
                await check_reach(agent, relay, host, [SLIRP_HOST, "127.0.0.1", *host_addresses()])
    finally:
        # Asserted after the block: a failure above is not masked by what it left.
        problems = await teardown([vm], failed=failed(request), save_to=tmp_path)
        problems += find_leftovers([vm.name], [vm.host_port])
    assert problems == [], f"left behind: {problems}"
