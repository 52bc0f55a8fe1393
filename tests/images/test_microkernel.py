"""The micro kernel: its config keeps every option of the fragment, it is cached, it boots.

The first test that needs the build compiles it (~7 min on 2 cores, in the
persistent image cache: /var/lib/remotecli or $REMOTECLI_CACHE_DIR), so a
second run finds it at once. The one boot runs the test image on the qemu
backend (TCG here) to AGENT_READY and prints the phase times; bench/kernel_boot.py
compares them with the cloud kernel's (speed is never asserted here).
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from remotecli.images import initramfs
from remotecli.images.build import ensure_test_image
from remotecli.images.microkernel import (
    FRAGMENT,
    LOCALVERSION,
    MicroKernel,
    config_mismatches,
    ensure_micro_kernel,
    fragment_options,
    load_micro_kernel,
    parse_config,
)
from remotecli.images.store import cache_dir
from remotecli.images.vm import VmArtifacts, ensure_vm_artifacts
from remotecli.vmm.agentclient import AgentClient
from remotecli.vmm.base import InstanceSpec, Phase
from remotecli.vmm.qemu.backend import QEMU, QemuBackend
from tests.support.images import Recorder

#: A cold build on a 2-core CI machine is ~7 min; pytest-timeout ignores
#: marks on fixtures, so every test that may run the build gets this budget.
BUILD_TIMEOUT = 1200


@pytest.fixture(scope="module")
def micro() -> MicroKernel:
    if os.geteuid() != 0:
        pytest.skip("building the micro kernel needs root (apt-get, the shared image cache)")
    return asyncio.run(ensure_micro_kernel(cache=cache_dir()))


def test_parse_config_reads_set_values_and_not_set_comments() -> None:
    text = 'CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C="x y"\n# a comment\n\nCONFIG_D=m\n'
    assert parse_config(text) == {"CONFIG_A": "y", "CONFIG_B": "n", "CONFIG_C": '"x y"',
                                  "CONFIG_D": "m"}  # fmt: skip


def test_a_lost_or_changed_option_is_named_and_absent_counts_as_not_set() -> None:
    final = {"CONFIG_A": "y", "CONFIG_B": "m"}
    wanted = {"CONFIG_A": "y", "CONFIG_B": "y", "CONFIG_C": "y", "CONFIG_D": "n"}
    assert config_mismatches(final, wanted) == ["CONFIG_B=y (got m)", "CONFIG_C=y (got n)"]


def test_the_fragment_builds_everything_in_and_turns_modules_off() -> None:
    options = fragment_options()
    assert {v for k, v in options.items() if k != "CONFIG_MODULES"} == {"y"}
    assert options["CONFIG_MODULES"] == "n"
    for needed in ("CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES", "CONFIG_VIRTIO_BLK", "CONFIG_VIRTIO_NET",
                   "CONFIG_VIRTIO_VSOCKETS", "CONFIG_EXT4_FS", "CONFIG_DEVTMPFS", "CONFIG_PVH",
                   "CONFIG_ACPI", "CONFIG_KVM_GUEST", "CONFIG_SERIAL_8250_CONSOLE",
                   "CONFIG_CGROUPS", "CONFIG_HW_RANDOM_VIRTIO"):  # fmt: skip
        assert options[needed] == "y"


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_every_fragment_option_is_in_the_saved_config(micro: MicroKernel) -> None:
    final = parse_config(micro.config.read_text())
    assert config_mismatches(final, fragment_options()) == []
    assert "CONFIG_MODULES" not in {k for k, v in final.items() if v == "y"}
    assert micro.manifest["config_sha256"] == hashlib.sha256(micro.config.read_bytes()).hexdigest()
    assert micro.manifest["fragment_sha256"] == hashlib.sha256(FRAGMENT.read_bytes()).hexdigest()


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_a_second_call_is_a_cache_hit_with_the_same_files(micro: MicroKernel) -> None:
    recorder = Recorder()
    again = asyncio.run(ensure_micro_kernel(cache=cache_dir(), progress=recorder))
    assert (again.directory, recorder.events) == (micro.directory, [])
    assert again.manifest["files"] == micro.manifest["files"]
    load_micro_kernel(micro.directory, verify=True)  # every sha256 still matches


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_the_images_are_a_pvh_elf_and_a_bzimage_of_the_source_version(micro: MicroKernel) -> None:
    source = micro.manifest["source"]
    upstream = source["version"].split("-")[0]  # 6.12.117-1 -> 6.12.117
    assert micro.release == f"{upstream}{LOCALVERSION}"
    assert micro.vmlinux.read_bytes()[:4] == b"\x7fELF"
    assert micro.vmlinuz.read_bytes()[0x202:0x206] == b"HdrS"
    if shutil.which("readelf"):
        notes = subprocess.run(["readelf", "-n", str(micro.vmlinux)], capture_output=True,
                               text=True, check=True).stdout  # fmt: skip
        # XEN_ELFNOTE_PHYS32_ENTRY (type 0x12): the PVH entry point Firecracker boots.
        assert "Xen" in notes and "0x00000012" in notes


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_slow_micro_kernel_boots_the_test_image_to_agent_ready_on_qemu(
    micro: MicroKernel,
) -> None:
    if shutil.which(QEMU) is None or shutil.which("qemu-img") is None:
        pytest.skip(f"no {QEMU} / qemu-img (apt-get install qemu-system-x86 qemu-utils)")
    image = ensure_test_image()
    artifacts = asyncio.run(ensure_vm_artifacts(image, microkernel=True))
    assert artifacts.kernel_version == micro.release
    assert artifacts.manifest["modules"]["load_order"] == []
    members = initramfs.read_cpio_newc(gzip.decompress(artifacts.initrd.read_bytes()))
    assert not any(name.endswith(".ko") for name in members)

    phases, console = asyncio.run(_boot(artifacts, image.rootfs))
    print(f"micro kernel {micro.release} under QEMU: {phases}")
    assert list(phases)[-1] == Phase.AGENT_READY.value
    assert f"remotecli-init: started (kernel {micro.release})" in console
    assert "insmod" not in console


async def _boot(artifacts: VmArtifacts, rootfs: Path) -> tuple[dict[str, float], str]:
    async def same(spec: InstanceSpec) -> VmArtifacts:
        return artifacts

    with tempfile.TemporaryDirectory(prefix="rq-micro-") as tmp:  # short: socket paths
        backend = QemuBackend(Path(tmp) / "state", artifacts=same)
        spec = InstanceSpec(image=rootfs, instance_id=f"micro-{secrets.token_hex(3)}",
                            agent_token=secrets.token_urlsafe(24))  # fmt: skip
        instance = backend.create(spec)
        try:
            await instance.start()
            readiness = await instance.wait_ready()
            async with AgentClient(instance.agent_endpoint, spec.agent_token) as agent:
                assert (await agent.health()).status == "ok"
            console = instance.console_path.read_text(errors="replace")
        finally:
            await instance.destroy()
    return dict(readiness.durations()), console
