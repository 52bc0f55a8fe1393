"""The firecracker backend against the real Firecracker v1.12.1 binary.

On a host without hardware virtualization (this one: kvm-pvm) Firecracker's
API, configuration, InstanceStart, pause and snapshot create/load all work;
the guest kernel runs extremely slowly and dies with KVM_EXIT_INTERNAL_ERROR
(see test_firecracker_boot.py). Tests that need a booted guest are skipped
there with that reason.
"""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

import pytest

from remotecli.errors import NotReady, VmError
from remotecli.vmm.base import InstanceState, Phase
from remotecli.vmm.firecracker.api import FirecrackerApiError
from remotecli.vmm.firecracker.backend import GUEST_CID, SnapshotFiles, boot_args
from tests.vmm.firecracker import fc_openapi
from tests.vmm.firecracker.lab import FcLab

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


def _processes_with(marker: str) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if marker in line and "ps -eo" not in line]


async def test_every_device_is_configured_through_the_api_and_each_request_matches_the_spec(
    fc_lab: FcLab,
) -> None:
    fc_lab.network = True
    instance = await fc_lab.start("api")

    info = await instance.api.instance_info()
    assert (info["state"], info["id"]) == ("Running", instance.vm_id)
    sent = [(m, p) for m, p, _ in instance.api.sent]
    assert sent == [
        ("PUT", "/machine-config"),
        ("PUT", "/boot-source"),
        ("PUT", "/drives/rootfs"),
        ("PUT", "/drives/config"),
        ("PUT", "/vsock"),
        ("PUT", "/network-interfaces/eth0"),
        ("PUT", "/actions"),
        ("GET", "/"),
    ]
    problems = [
        p for m, path, body in instance.api.sent for p in fc_openapi.check_request(m, path, body)
    ]
    assert problems == []
    config = await instance.api.get("/vm/config")
    assert config["machine-config"]["mem_size_mib"] == 128
    assert config["vsock"] == {"guest_cid": GUEST_CID, "uds_path": str(instance.seen("v.sock"))}
    assert [d["drive_id"] for d in config["drives"]] == ["rootfs", "config"]
    assert config["network-interfaces"][0]["host_dev_name"] == "tap0"
    # Every path Firecracker was given for the snapshot is under vm_dir, not the state dir.
    assert config["drives"][0]["path_on_host"] == str(fc_lab.root / "vm" / "rootfs.ext4")
    assert boot_args("console=ttyS0 panic=-1") == "console=ttyS0 panic=-1 reboot=k pci=off"


async def test_firecracker_rejects_what_the_spec_rejects(fc_lab: FcLab) -> None:
    """The schema and the binary agree on an unknown field and on a value out of range."""
    backend = fc_lab.backend()
    instance = fc_lab.track(backend.create(fc_lab.spec("reject")))
    instance.dir.create("t" * 20, {})
    await instance._spawn()
    await instance._wait_api()
    bad = {"vcpu_count": 1, "mem_size_mib": 128, "bogus": 1}
    assert fc_openapi.check_request("PUT", "/machine-config", bad) == [
        "PUT /machine-config (MachineConfiguration) body: unknown field 'bogus'"
    ]
    with pytest.raises(FirecrackerApiError) as caught:
        await instance.api.put("/machine-config", bad)
    assert caught.value.status == 400
    assert "unknown field `bogus`" in caught.value.fault_message
    assert fc_openapi.check_request("PUT", "/vsock", {"guest_cid": 2, "uds_path": "/x"}) != []
    with pytest.raises(FirecrackerApiError) as caught:
        await instance.api.vsock(Path("/nonexistent-dir/v.sock"), 2)
    assert caught.value.status == 400


async def test_snapshot_create_then_load_in_a_new_process(fc_lab: FcLab, tmp_path: Path) -> None:
    fc_lab.network = True
    golden = await fc_lab.start("golden")
    snap = await golden.create_snapshot(tmp_path / "snap")

    assert (await golden.api.instance_info())["state"] == "Paused"
    names = sorted(p.name for p in snap.directory.iterdir())
    assert names == ["config.disk", "disk.ext4", "memory", "snapshot.json", "vmstate"]
    assert snap.file(SnapshotFiles.MEMORY).stat().st_size == 128 << 20
    assert 0 < snap.file(SnapshotFiles.VMSTATE).stat().st_size < 1 << 20
    assert snap.file(SnapshotFiles.DISK).stat().st_size == 64 << 20
    meta_path = snap.directory / "snapshot.json"
    assert stat.S_IMODE(meta_path.stat().st_mode) == 0o600  # it carries the golden token
    meta = json.loads(meta_path.read_text())
    assert meta["golden_token"] == golden.spec.agent_token
    assert meta["vsock"]["uds_path"] == str(fc_lab.root / "vm" / "v.sock")
    await golden.destroy()

    clone = fc_lab.track(fc_lab.backend().restore(fc_lab.spec("clone"), snap.directory))
    await clone.start()
    assert clone.state is InstanceState.STARTING
    assert (await clone.api.instance_info())["state"] == "Running"
    assert [(m, p) for m, p, _ in clone.api.sent][:1] == [("PUT", "/snapshot/load")]
    assert fc_openapi.check_request(*clone.api.sent[0]) == []
    assert Phase.VMM_STARTED in clone.readiness.reached
    assert set(clone.readiness.skipped) >= {Phase.KERNEL_BOOTED, Phase.INIT_STARTED}
    # The clone's own copy of the disk, at the path the snapshot recorded (its vm_dir view).
    assert (clone.dir.path / "rootfs.ext4").stat().st_size == 64 << 20
    assert clone.timings["snapshot_load"] < 5.0
    assert clone.network is not None and "tap0" in await clone.network.links()

    await clone.destroy()
    await clone.destroy()  # idempotent
    assert not clone.dir.path.exists()
    assert not clone.network.exists()
    assert _processes_with(clone.vm_id) == []
    assert list((fc_lab.root / "vm").iterdir()) == []  # the bind mounts never reached the host


async def test_destroy_leaves_nothing_and_reap_finds_a_lost_instance(fc_lab: FcLab) -> None:
    fc_lab.network = True
    instance = await fc_lab.start("lost")
    assert _processes_with(instance.vm_id) != []
    netns = instance.network
    assert netns is not None and netns.exists()

    fresh = fc_lab.backend()  # a restarted controller: no handle, only the state dir
    assert instance.spec.instance_id in await fresh.list_running()
    await fresh.reap(instance.spec.instance_id)

    assert _processes_with(instance.vm_id) == []
    assert not netns.exists()
    assert not instance.dir.path.exists()
    assert await fresh.list_running() == []


@pytest.mark.parametrize("jailed", [False, True], ids=["plain", "jailer"])
async def test_a_missing_kernel_is_named_before_anything_is_made(
    fc_lab: FcLab, jailed: bool
) -> None:
    fc_lab.jail = jailed
    assert fc_lab.artifacts is not None
    fc_lab.artifacts = type(fc_lab.artifacts)(  # type: ignore[call-arg]
        fc_lab.artifacts.disk, Path("/nonexistent/vmlinux"), None, "console=ttyS0"
    )
    instance = fc_lab.track(fc_lab.backend().create(fc_lab.spec("nokernel")))
    with pytest.raises(VmError, match="the VM kernel /nonexistent/vmlinux does not exist"):
        await instance.start()
    assert not instance.dir.path.exists()
    assert instance.jail is None or not instance.jail.top.exists()


async def test_a_kernel_firecracker_cannot_load_is_refused_with_its_fault_message(
    fc_lab: FcLab, tmp_path: Path
) -> None:
    junk = tmp_path / "vmlinux"
    junk.write_bytes(b"not an ELF kernel\n" * 100)
    assert fc_lab.artifacts is not None
    fc_lab.artifacts = type(fc_lab.artifacts)(  # type: ignore[call-arg]
        fc_lab.artifacts.disk, junk, None, "console=ttyS0"
    )
    instance = fc_lab.track(fc_lab.backend().create(fc_lab.spec("junk")))
    with pytest.raises(FirecrackerApiError) as caught:
        await instance.start()
    assert caught.value.path == "/actions"
    assert "Kernel" in caught.value.fault_message or "kernel" in caught.value.fault_message
    assert instance.state is InstanceState.FAILED
    assert not instance.dir.path.exists()


async def test_firecracker_exiting_early_is_not_ready_with_its_last_words(
    fc_lab: FcLab, tmp_path: Path
) -> None:
    fake = tmp_path / "firecracker"
    fake.write_text("#!/bin/sh\necho 'firecracker: cannot open /dev/kvm: boom' >&2\nexit 3\n")
    fake.chmod(0o755)
    backend = fc_lab.backend(firecracker=fake)
    instance = fc_lab.track(backend.create(fc_lab.spec("early")))
    with pytest.raises(NotReady) as caught:
        await instance.start()
    err = caught.value
    assert (err.waiting_for, err.last_phase) == ("VMM_STARTED", None)
    assert "boom" in err.console_tail
    assert "firecracker exited with code 3" in err.hint
    assert not instance.dir.path.exists()
