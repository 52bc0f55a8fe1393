"""The firecracker backend under the real jailer v1.12.1 (``FirecrackerBackend(jailer=True)``).

Measured on this host (kvm-pvm, cgroup v1 hybrid): the jailer works with
``--cgroup-version 1``; it leaves its cgroup dirs behind when firecracker exits
(destroy removes them). Guest boots are as slow here as without the jailer
(test_firecracker_boot.py), so these tests stop at what the host allows:
configure, InstanceStart, the serial console, snapshot create + load, teardown.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
import time
from pathlib import Path

import pytest

from remotecli.errors import VmError
from remotecli.vmm import statedir
from remotecli.vmm.base import InstanceState
from remotecli.vmm.firecracker import jail as fcjail
from remotecli.vmm.firecracker.backend import FirecrackerBackend, FirecrackerInstance, SnapshotFiles
from tests.support import procfs
from tests.support.poll import eventually_async
from tests.vmm.firecracker import fc_openapi
from tests.vmm.firecracker.lab import FcLab

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]
NOBODY = 65534


def _listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def _jail_of(instance: FirecrackerInstance) -> fcjail.Jail:
    assert instance.jail is not None
    return instance.jail


async def test_a_jailed_vm_runs_unprivileged_in_its_chroot_with_limits_and_its_console(
    fc_lab: FcLab,
) -> None:
    fc_lab.jail = True
    fc_lab.extra_boot_args = "earlyprintk=serial,ttyS0"  # the banner proves the console path
    instance = await fc_lab.start("jailed")
    jail = _jail_of(instance)
    pid = instance.process.pid
    assert pid is not None

    assert procfs.uid(pid) == NOBODY
    # pivot_root in a mount namespace of its own: its / is the chroot, our mounts are not its.
    seen_root = _listing(Path(f"/proc/{pid}/root"))
    assert seen_root == _listing(jail.root)
    assert "etc" not in seen_root
    assert os.stat(f"/proc/{pid}/ns/mnt").st_ino != os.stat("/proc/self/ns/mnt").st_ino
    info = await instance.api.instance_info()
    assert (info["state"], info["id"]) == ("Running", instance.vm_id)
    problems = [p for m, path, b in instance.api.sent for p in fc_openapi.check_request(m, path, b)]
    assert problems == []
    config = await instance.api.get("/vm/config")
    # Every path firecracker was given is chroot-relative: clones in their own chroot match.
    assert config["boot-source"]["kernel_image_path"] == "/vmlinux"
    assert [d["path_on_host"] for d in config["drives"]] == ["/rootfs.ext4", "/config.disk"]
    assert config["vsock"]["uds_path"] == "/v.sock"
    assert instance.agent_endpoint.path == jail.root / "v.sock"
    assert (jail.root / "v.sock").is_socket()
    # Same filesystem and world-readable: hard links, the golden files untouched.
    assert jail.placed == {"vmlinux": "link", "initrd.img": "link"}
    assert (jail.root / "vmlinux").stat().st_uid == 0
    disk = (jail.root / "rootfs.ext4").stat()
    assert (disk.st_uid, stat.S_IMODE(disk.st_mode)) == (NOBODY, 0o600)
    # cgroup v1 on this hybrid host: memory = guest + overhead, CPU = one vCPU's worth.
    assert jail.version == 1 and jail.skipped == {}
    memory_cg, cpu_cg = (Path(f"/sys/fs/cgroup/{c}/remotecli-fc/{instance.vm_id}")
                         for c in ("memory", "cpu"))  # fmt: skip
    assert jail.cgroup_dirs == [memory_cg, cpu_cg]
    limit = int((memory_cg / "memory.limit_in_bytes").read_text())
    assert limit == (128 + fcjail.MEMORY_OVERHEAD_MIB) << 20
    assert int((cpu_cg / "cpu.cfs_quota_us").read_text()) == fcjail.CPU_PERIOD_US
    assert int((cpu_cg / "cpu.cfs_period_us").read_text()) == fcjail.CPU_PERIOD_US
    for cg in (memory_cg, cpu_cg):
        assert str(pid) in (cg / "tasks").read_text().split()
    print(f"jailed start timings: {instance.timings}")

    def banner() -> bool:
        shown = "Linux version" in instance.console_path.read_text(errors="replace")
        assert shown, instance.console_tail(500)
        return True

    await eventually_async("the kernel's banner", banner, 60, interval=0.5)
    print(f"banner after {time.monotonic() - instance.started_at:.1f} s")


async def test_a_snapshot_taken_in_a_jail_restores_in_a_new_jail_with_linked_memory(
    fc_lab: FcLab, tmp_path: Path
) -> None:
    fc_lab.jail = True
    fc_lab.network = True
    golden = await fc_lab.start("golden")
    snap = await golden.create_snapshot(tmp_path / "snap")

    assert (await golden.api.instance_info())["state"] == "Paused"
    assert sorted(p.name for p in snap.directory.iterdir()) == [
        "config.disk", "disk.ext4", "memory", "snapshot.json", "vmstate",
    ]  # fmt: skip
    assert list(_jail_of(golden).root.glob("snapshot.*")) == []  # moved out of the chroot
    memory = snap.file(SnapshotFiles.MEMORY).stat()
    assert (memory.st_uid, memory.st_gid, stat.S_IMODE(memory.st_mode)) == (0, NOBODY, 0o640)
    assert memory.st_size == 128 << 20
    meta = json.loads((snap.directory / "snapshot.json").read_text())
    assert (meta["vm_dir"], meta["vsock"]["uds_path"], meta["jail"]) == ("/", "/v.sock", True)
    await golden.destroy()

    clone = fc_lab.track(fc_lab.backend().restore(fc_lab.spec("clone"), snap.directory))
    await clone.start()
    jail = _jail_of(clone)
    assert clone.state is InstanceState.STARTING
    assert (await clone.api.instance_info())["state"] == "Running"
    assert [(m, p) for m, p, _ in clone.api.sent][:1] == [("PUT", "/snapshot/load")]
    assert clone.api.sent[0][2]["snapshot_path"] == "/vmstate"
    assert jail.placed == {"vmstate": "link", "memory": "link"}  # group-readable: no copy
    assert (jail.root / "rootfs.ext4").stat().st_size == 64 << 20
    pid = clone.process.pid
    assert clone.network is not None and pid is not None
    assert os.stat(f"/proc/{pid}/ns/net").st_ino == clone.network.handle.stat().st_ino
    assert "tap0" in await clone.network.links()
    print(f"jailed restore timings: {clone.timings}")

    unjailed = FirecrackerBackend(fc_lab.root / "u", vm_dir=fc_lab.root / "vm")
    with pytest.raises(VmError, match="a jail's chroot"):
        await unjailed.restore(fc_lab.spec("nojail"), snap.directory).start()


async def test_destroy_and_reap_leave_no_process_chroot_cgroup_netns_or_mount(
    fc_lab: FcLab,
) -> None:
    fc_lab.jail = True
    fc_lab.network = True
    instance = await fc_lab.start("lost")
    jail = _jail_of(instance)
    netns = instance.network
    assert netns is not None and netns.exists() and jail.root.is_dir()
    assert all(d.is_dir() for d in jail.cgroup_dirs) and jail.cgroup_dirs

    fresh = fc_lab.backend()  # a restarted controller: only instance.json
    assert await fresh.list_running() == [instance.spec.instance_id]
    await fresh.reap(instance.spec.instance_id)

    assert [p.pid for p in procfs.naming(instance.vm_id)] == []
    assert not jail.top.exists() and not instance.dir.path.exists()
    assert [d for d in jail.cgroup_dirs if d.exists()] == []
    assert not netns.exists()
    assert statedir.mounts_under(fc_lab.root) == []
    assert await fresh.list_running() == []
    await instance.destroy()  # the old handle: idempotent, nothing to complain about


async def test_a_chroot_without_its_state_dir_is_found_and_reaped(fc_lab: FcLab) -> None:
    """After a reboot /run (the state root) is gone but the chroot base is not."""
    fc_lab.jail = True
    instance = await fc_lab.start("orphan")
    jail = _jail_of(instance)
    await instance.process.kill()
    instance.dir.remove()

    fresh = fc_lab.backend()
    assert await fresh.list_running() == [instance.spec.instance_id]
    await fresh.reap(instance.spec.instance_id)
    assert not jail.top.exists()
    assert [d for d in jail.cgroup_dirs if d.exists()] == []


async def test_across_filesystems_the_kernel_is_copied_and_owned_by_the_jail(
    fc_lab: FcLab,
) -> None:
    with tempfile.TemporaryDirectory(prefix="rfj-", dir="/dev/shm") as shm:  # tmpfs
        fc_lab.jail = True
        fc_lab.chroot_base = Path(shm)
        instance = await fc_lab.start("copied")
        jail = _jail_of(instance)
        assert jail.placed == {"vmlinux": "copy", "initrd.img": "copy"}
        kernel = (jail.root / "vmlinux").stat()
        assert (kernel.st_uid, stat.S_IMODE(kernel.st_mode)) == (NOBODY, 0o600)
        assert (await instance.api.instance_info())["state"] == "Running"
        print(f"copied-kernel start timings: {instance.timings}")
        await instance.destroy()
        assert _listing(Path(shm) / "firecracker") == []


@pytest.mark.parametrize(
    ("uid", "gid", "named"),
    [(0, NOBODY, "jailer uid 0 would run firecracker as root"),
     (-5, NOBODY, "jailer uid -5 is not a number"),
     (NOBODY, 2**32 - 1, "jailer gid 4294967295 is not a number")],
)  # fmt: skip
def test_a_bad_uid_or_gid_is_refused_by_name(uid: int, gid: int, named: str) -> None:
    with pytest.raises(VmError, match=named):
        FirecrackerBackend(Path("/nonexistent"), jailer=True, uid=uid, gid=gid)
