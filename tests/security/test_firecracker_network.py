"""E4, E5, E7: what the controller's Firecracker VMs get, started by the real binary.

Firecracker guests do not boot on this host (no VT-x), but the VMM does start
and takes its whole configuration through the API. So these tests make the
backend exactly as the controller does (``runtime.make_backend`` from
``Settings``), start a VM with it and read back what Firecracker was given:
no network interface (E4), and the jailer on or off as the settings say,
seen as the uid the ``firecracker`` process really runs as (E7). E5 builds
the per-VM network namespace of ``network=True`` and tries, from inside it,
to reach a listener of the host.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from remotecli.controller.fleet.runtime import make_backend
from remotecli.controller.settings import Settings
from remotecli.images.build import ensure_test_image
from remotecli.vmm.base import Deadlines, InstanceSpec, Phase
from remotecli.vmm.firecracker import binaries as fcbin
from remotecli.vmm.firecracker.backend import FirecrackerBackend, FirecrackerInstance
from remotecli.vmm.firecracker.jail import default_chroot_base
from remotecli.vmm.firecracker.netns import VmNetwork
from tests.support import procfs

pytestmark = pytest.mark.anyio

VAULT_KEYS = "k1:" + "A" * 43 + "="
NOBODY = 65534


@pytest.fixture
def state_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="rsec-"))  # short: socket paths < 108 bytes
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def rootfs() -> Iterator[Path]:
    if not os.path.exists("/dev/kvm"):
        pytest.skip("no /dev/kvm: firecracker cannot start")
    for name in ("firecracker", "jailer"):
        if fcbin.find(name) is None:
            pytest.skip(f"no {name} binary: {fcbin.INSTALL_HINT}")
    # The jailed VMs go where the controller puts them; take back the (empty) directories
    # the jailer made there if there were none before.
    base = default_chroot_base()
    made = not base.exists()
    yield ensure_test_image().rootfs
    if made:
        for empty in sorted(base.glob("*"), reverse=True):
            with contextlib.suppress(OSError):
                empty.rmdir()
        with contextlib.suppress(OSError):
            base.rmdir()


def netns_exists(name: str) -> bool:
    return Path("/run/netns", name).exists()


@contextlib.asynccontextmanager
async def started(backend: FirecrackerBackend, rootfs: Path) -> AsyncIterator[FirecrackerInstance]:
    spec = InstanceSpec(
        image=rootfs,
        instance_id=f"sec-{secrets.token_hex(3)}",
        agent_token=secrets.token_urlsafe(24),
        deadlines=Deadlines({p: 20.0 for p in Phase}),
    )
    instance = backend.create(spec)
    try:
        await instance.start()
        yield instance
    finally:
        await instance.destroy()
    # Checked only when the test passed: a failure is not masked by what it left.
    left = [str(p) for p in backend.state_root.glob("*")]
    if instance.jail is not None and instance.jail.top.exists():
        left.append(str(instance.jail.top))
    assert left == [], f"the VM left behind: {left}"


@pytest.mark.parametrize(
    ("environment", "override", "jailed"),
    [
        ("production", None, True),
        ("production", "0", False),
        ("development", None, False),
        ("development", "1", True),
    ],
)
async def test_the_controllers_firecracker_vms_have_no_nic_and_the_jailer_follows_the_settings(
    rootfs: Path,
    state_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    environment: str,
    override: str | None,
    jailed: bool,
) -> None:
    # The setting comes from the environment, as under `make up`.
    if override is None:
        monkeypatch.delenv("REMOTECLI_FIRECRACKER_JAILER", raising=False)
    else:
        monkeypatch.setenv("REMOTECLI_FIRECRACKER_JAILER", override)
    if environment == "production":
        settings = Settings(
            environment="production",
            state_dir=state_dir,
            backend="firecracker",
            vault_keys=VAULT_KEYS,
            database_url="postgresql+psycopg://u:p@db/x",
        )
    else:
        settings = Settings(environment="development", state_dir=state_dir, backend="firecracker")
    backend = make_backend("firecracker", settings)
    assert isinstance(backend, FirecrackerBackend), backend
    async with started(backend, rootfs) as vm:
        case = f"{environment} with REMOTECLI_FIRECRACKER_JAILER={override}"
        assert vm.process.pid is not None
        uid = procfs.uid(vm.process.pid)
        assert uid == (NOBODY if jailed else os.geteuid()), (
            f"{case}: firecracker runs as uid {uid}, expected {'the jail' if jailed else 'ours'}"
        )
        assert (vm.jail is not None) == jailed, case
        sent = [(method, path) for method, path, _ in vm.api.sent]
        assert not [p for _, p in sent if p.startswith("/network-interfaces")], (
            f"{case}: the controller's VM was given a network interface: {sent}"
        )
        config = await vm.api.get("/vm/config")
        assert config.get("network-interfaces") == [], (
            f"{case}: firecracker reports network interfaces {config.get('network-interfaces')}"
        )
        assert vm.network is None and not netns_exists(vm.vm_id), case
        assert config["vsock"]["guest_cid"] > 2, config["vsock"]  # the agent's only way in


def in_netns(netns: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", netns, *argv], capture_output=True, text=True, timeout=20
    )


CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close()
    print("connected")
except OSError as exc:
    print(type(exc).__name__, exc)
"""


def host_addresses() -> list[str]:
    """The host's own IPv4 addresses but loopback (``ip -4 -o addr``)."""
    out = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout
    return [line.split()[3].split("/")[0] for line in out.splitlines() if " lo " not in f" {line} "]


async def test_a_vms_network_namespace_has_only_its_tap_and_routes_nowhere() -> None:
    if shutil.which("ip") is None or os.geteuid() != 0:
        pytest.skip("needs root and iproute2 to make a network namespace")
    network = VmNetwork(f"rcli-sec-{secrets.token_hex(3)}")
    listener = socket.socket()
    listener.bind(("0.0.0.0", 0))  # noqa: S104 - the host's every address, for the probe
    listener.listen(8)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    await network.create()
    try:
        assert sorted(await network.links()) == ["lo", network.tap], await network.links()
        routes = in_netns(network.netns, "ip", "-4", "route", "show", "table", "all")
        routes6 = in_netns(network.netns, "ip", "-6", "route", "show", "table", "all")
        assert "default" not in routes.stdout + routes6.stdout, routes.stdout + routes6.stdout
        addresses = in_netns(network.netns, "ip", "-o", "addr", "show", "dev", network.tap)
        assert " inet" not in addresses.stdout, f"the TAP has an address: {addresses.stdout}"
        forward = in_netns(network.netns, "cat", "/proc/sys/net/ipv4/ip_forward")
        assert forward.stdout.strip() == "0", forward
        targets = ["127.0.0.1", *host_addresses()]
        assert len(targets) > 1, "the host has no address but loopback to try"
        for target in targets:
            tried = in_netns(network.netns, "python3", "-c", CONNECT, target, str(port))
            assert tried.returncode == 0, tried.stderr
            assert "connected" not in tried.stdout, (
                f"from the VM's namespace {target}:{port} (a host listener) answered"
            )
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody reached the host's listener
    finally:
        listener.close()
        await network.delete()
    assert not network.exists(), f"namespace {network.netns} left behind"
