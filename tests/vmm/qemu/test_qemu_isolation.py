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

import asyncio
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from remotecli.controller.fleet.runtime import make_backend
from remotecli.controller.settings import Settings
from remotecli.providers import PROVIDERS
from remotecli.testbed import TESTBED_URL_ENV
from remotecli.vmm.agentclient import AgentClient
from remotecli.vmm.base import InstanceSpec
from remotecli.vmm.qemu.backend import FORWARD_ADDR, QemuBackend, QemuInstance
from tests.security.probe import (
    CLAUDE_PATH,
    REPLY,
    ROTATED,
    Relay,
    Trap,
    check_reach,
    give_claude_credentials,
    host_addresses,
    relay_on,
    reply_of,
    run_claude,
    trap,
)
from tests.support import procfs
from tests.vmm.lab import failed, teardown
from tests.vmm.qemu.lab import VmImage, find_leftovers

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
    process = procfs.read(instance.pid) if instance.pid is not None else None
    assert process is not None, f"qemu (pid {instance.pid}) is gone"
    return process.argv[process.argv.index("-netdev") + 1]


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


@dataclass
class ProbeVm:
    """One cold-booted guest whose fake CLIs' provider is ``relay``, behind the one forward."""

    vm: QemuInstance
    backend: QemuBackend
    relay: Relay
    host: Trap
    agent: AgentClient


@pytest.fixture(scope="module")
async def probe_vm(
    vm_image: VmImage,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    anyio_backend: str,
) -> AsyncIterator[ProbeVm]:
    state = Path(tempfile.mkdtemp(prefix="rq-sec-"))  # short: socket paths < 108 bytes
    settings = Settings(environment="test", state_dir=state, backend="qemu", warm_pool_auth=0)
    relay_socket = socket.create_server(("127.0.0.1", 0))
    relay_port = relay_socket.getsockname()[1]
    backend = qemu_backend(settings, {"relay": relay_port})
    env = {TESTBED_URL_ENV: f"http://{FORWARD_ADDR}:{relay_port}"}
    vm = backend.create(spec(vm_image.image.rootfs, env))
    try:
        with trap() as host, relay_on(relay_socket) as relay:
            await vm.start()
            await vm.wait_ready()
            async with AgentClient(vm.agent_endpoint, vm.spec.agent_token) as agent:
                yield ProbeVm(vm, backend, relay, host, agent)
    finally:
        save_to = tmp_path_factory.mktemp("consoles")
        problems = await teardown([vm], failed=failed(request), save_to=save_to)
        problems += find_leftovers([vm.name], [vm.host_port])
        shutil.rmtree(state, ignore_errors=True)
    # Asserted after the block: a failure above is not masked by what it left.
    assert problems == [], f"left behind: {problems}"


async def test_a_guest_reaches_only_its_explicit_forward(probe_vm: ProbeVm) -> None:
    vm, relay = probe_vm.vm, probe_vm.relay
    netdev = running_netdev(vm).split(",")
    assert "restrict=on" in netdev, netdev
    assert [o for o in netdev if o.startswith("guestfwd=")] == [
        probe_vm.backend.forwards[0].netdev_option(shutil.which("busybox") or "busybox")
    ], netdev
    relay.seen.clear()
    await give_claude_credentials(probe_vm.agent)
    targets = [SLIRP_HOST, "127.0.0.1", *host_addresses()]
    await check_reach(probe_vm.agent, relay, probe_vm.host, targets)


def read_guest_disk(disk: Path, commands: list[str], scratch: Path) -> list[str]:
    """debugfs ``commands`` on the guest's ext4 disk, from a copy of the running VM's
    overlay made on the host (its journal replayed first)."""
    raw = scratch / "disk.raw"
    subprocess.run(
        ["qemu-img", "convert", "-U", "-f", "qcow2", "-O", "raw", str(disk), str(raw)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    try:
        # 0 or 1: a replayed journal counts as "errors corrected"; the copy is ours.
        fsck = subprocess.run(
            ["e2fsck", "-E", "journal_only", "-y", str(raw)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert fsck.returncode in (0, 1), fsck.stdout + fsck.stderr
        return [
            subprocess.run(
                ["debugfs", "-R", command, str(raw)],
                check=True, capture_output=True, text=True, timeout=60,
            ).stdout
            for command in commands
        ]  # fmt: skip
    finally:
        raw.unlink(missing_ok=True)


def owner(stat_output: str) -> str:
    found = re.search(r"User:\s*(\d+)\s+Group:\s*(\d+)", stat_output)
    assert found is not None, f"debugfs showed no owner: {stat_output}"
    return f"{found[1]} {found[2]}"


async def test_a_cli_in_the_guest_writes_its_files_as_the_unprivileged_user(
    probe_vm: ProbeVm, tmp_path: Path
) -> None:
    """The CLI rotates its own credential file (an expired token is refreshed through the
    relay); the file it created is owned by the uid it ran as, 1000, not root."""
    relay, agent = probe_vm.relay, probe_vm.agent
    relay.seen.clear()
    await give_claude_credentials(agent, expired=True)
    events = await run_claude(agent)
    assert reply_of(events) == REPLY, f"the refreshing run failed: {events}"
    assert relay.seen == ["/claude/v1/oauth/token"], relay.seen
    held = await agent.request("GET", "/credentials", params={"provider": "claude_code"})
    [written] = [f for f in held["files"] if f["path"] == CLAUDE_PATH]
    assert ROTATED in written["content"], "the CLI did not rewrite its file"
    # The agent's own write fsyncs: ext4 commits its journal, the CLI's new inode with it.
    gemini = PROVIDERS["gemini_cli"].credential_files[0].path
    await agent.request(
        "POST", "/credentials/write",
        json={"provider": "gemini_cli", "files": [{"path": gemini, "content": "{}"}]},
    )  # fmt: skip
    disk = probe_vm.vm.dir.path / "disk.qcow2"
    path = f"/home/cli/{CLAUDE_PATH}"
    commands = [f"cat {path}", f"stat {path}", "stat /etc/passwd"]
    content, cli_file, root_file = await asyncio.to_thread(
        read_guest_disk, disk, commands, tmp_path
    )
    # The agent wrote the first version (chowned to cli too): the disk must hold the CLI's.
    assert ROTATED in content, f"the disk holds an older file: {content[:300]}"
    assert owner(root_file) == "0 0", root_file  # the reading sees root where root owns
    assert owner(cli_file) == "1000 1000", f"the file the CLI wrote in the guest: {cli_file}"
