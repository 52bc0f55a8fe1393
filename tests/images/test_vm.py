"""The golden image's VM artifacts: what the initramfs, the disks and the manifest contain.

The artifacts are built once per machine into the image cache (the kernel
package is fetched once, ~35 MB, then kept); the boot test is in test_vm_boot.py.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import os
import re
import shutil
import stat
import struct
import subprocess
import tarfile
from pathlib import Path

import pytest

from remotecli.errors import ImageError, VmError
from remotecli.images import initramfs, layout
from remotecli.images.configdisk import (
    MARKER,
    config_disk_bytes,
    read_config_disk,
    write_config_disk,
)
from remotecli.images.kernel import modinfo
from remotecli.images.store import Image
from remotecli.images.vm import (
    BUSYBOX,
    DISK,
    INITRD,
    VmArtifacts,
    ensure_vm_artifacts,
    load_vm_artifacts,
    prune_orphans,
)
from tests.support.images import Recorder


@pytest.fixture(scope="module")
def artifacts(test_image: Image) -> VmArtifacts:
    return asyncio.run(ensure_vm_artifacts(test_image))


def _initrd_members(artifacts: VmArtifacts) -> dict[str, initramfs.Entry]:
    return initramfs.read_cpio_newc(gzip.decompress(artifacts.initrd.read_bytes()))


# -- initramfs ---------------------------------------------------------------------------


def test_the_initramfs_has_init_busybox_console_and_the_modules_in_load_order(
    artifacts: VmArtifacts,
) -> None:
    members = _initrd_members(artifacts)
    init = members["init"]
    assert stat.S_ISREG(init.mode) and init.mode & 0o111 == 0o111
    assert init.data.decode() == initramfs.INIT_SCRIPT
    busybox = members["bin/busybox"]
    assert hashlib.sha256(busybox.data).hexdigest() == artifacts.manifest["busybox"]["sha256"]
    console = members["dev/console"]
    assert (stat.S_ISCHR(console.mode), console.rdev) == (True, (5, 1))

    order = members[initramfs.MODULE_LIST].data.decode().split()
    assert order == artifacts.manifest["modules"]["load_order"]
    for wanted in ("virtio_mmio", "virtio_blk", "virtio_net", "vmw_vsock_virtio_transport"):
        assert wanted in order
    for i, name in enumerate(order):
        elf = members[f"{initramfs.MODULE_DIR}/{name}.ko"].data
        depends = [d for d in modinfo(elf).get("depends", "").split(",") if d]
        # Every dependency is loaded before the module that needs it.
        assert set(depends) <= set(order[:i]), (name, depends)
    # ext4 is built into Debian's cloud kernel, so nothing to load for it.
    assert artifacts.manifest["modules"]["built_in"] == ["ext4"]


def test_the_cpio_is_reproducible_and_readable_by_busybox_cpio(tmp_path: Path) -> None:
    modules = [("a", b"\x7fELF-a"), ("b", b"\x7fELF-b")]
    first = initramfs.build(b"#!busybox", modules)
    assert first == initramfs.build(b"#!busybox", modules)
    (tmp_path / "initrd").write_bytes(gzip.decompress(first))
    listed = subprocess.run(
        [str(BUSYBOX), "cpio", "-t", "-F", str(tmp_path / "initrd")],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert sorted(listed) == sorted(initramfs.read_cpio_newc(gzip.decompress(first)))
    assert f"{initramfs.MODULE_DIR}/b.ko" in listed


def test_the_init_script_is_valid_shell() -> None:
    done = subprocess.run(
        [str(BUSYBOX), "sh", "-n", "-c", initramfs.INIT_SCRIPT], capture_output=True, text=True
    )
    assert (done.returncode, done.stderr) == (0, "")


# -- kernel -----------------------------------------------------------------------------


def test_vmlinux_is_the_x86_64_elf_inside_the_bzimage(artifacts: VmArtifacts) -> None:
    with artifacts.vmlinux.open("rb") as fh:
        header = fh.read(64)
    assert header[:4] == b"\x7fELF"
    (machine,) = struct.unpack_from("<H", header, 0x12)
    assert machine == 0x3E  # EM_X86_64
    assert artifacts.vmlinuz.read_bytes()[0x202:0x206] == b"HdrS"
    assert re.fullmatch(r"\d+\.\d+\.\d+\+deb\d+-cloud-amd64", artifacts.kernel_version)
    kernel = artifacts.manifest["kernel"]
    assert kernel["package"] == f"linux-image-{artifacts.kernel_version}"


def test_module_dependencies_come_from_modinfo(artifacts: VmArtifacts) -> None:
    members = _initrd_members(artifacts)
    info = modinfo(members[f"{initramfs.MODULE_DIR}/virtio_net.ko"].data)
    assert info["name"] == "virtio_net"
    assert "net_failover" in info["depends"].split(",")


# -- config disk ------------------------------------------------------------------------


def test_the_config_disk_round_trips_with_private_modes(tmp_path: Path) -> None:
    token = "s3cret-token-" + "x" * 20
    path = tmp_path / "config.img"
    write_config_disk(path, token=token, env={"REMOTECLI_AGENT_ARGS": "--vsock off"})

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = path.read_bytes()
    assert len(data) % 4096 == 0
    assert data.startswith(f"{MARKER}/".encode())
    with tarfile.open(path) as tar:
        members = tar.getmembers()
        assert [(m.name, m.mode, m.uid) for m in members] == [
            (MARKER, 0o700, 0),
            (f"{MARKER}/token", 0o600, 0),
            (f"{MARKER}/agent.env", 0o600, 0),
        ]
        assert all(token not in m.name for m in members)
    assert read_config_disk(path) == {
        "token": f"{token}\n".encode(),
        "agent.env": b'REMOTECLI_AGENT_ARGS="--vsock off"\n',
    }


def test_the_config_disk_replaces_a_file_and_keeps_it_private(tmp_path: Path) -> None:
    path = tmp_path / "config.img"
    path.write_bytes(b"old")
    path.chmod(0o644)
    write_config_disk(path, token="t" * 32, env={})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_config_disk(path)["token"] == b"t" * 32 + b"\n"


def test_the_config_disk_refuses_a_multiline_token_or_a_bad_variable() -> None:
    with pytest.raises(VmError):
        config_disk_bytes(token="a\nb", env={})
    with pytest.raises(VmError):
        config_disk_bytes(token="t" * 32, env={"BAD-NAME": "x"})


# -- the root disk ----------------------------------------------------------------------


def _debugfs_stat(disk: Path, path: str) -> tuple[int, int]:
    out = subprocess.run(
        ["debugfs", "-R", f"stat {path}", str(disk)], capture_output=True, text=True, check=True
    ).stdout
    mode = re.search(r"Mode:\s+(\d+)", out)
    user = re.search(r"User:\s+(\d+)", out)
    assert mode and user, out
    return int(user.group(1)), int(mode.group(1), 8)


def test_the_root_disk_keeps_owners_and_modes(artifacts: VmArtifacts, test_image: Image) -> None:
    disk = artifacts.disk
    home = layout.CLI_HOME
    paths = [home, *(f"{home}/{d}" for d in layout.CREDENTIAL_DIRS), layout.AGENT_UNIT_PATH]
    for path in paths:
        st = test_image.guest(path).lstat()
        assert _debugfs_stat(disk, path) == (st.st_uid, stat.S_IMODE(st.st_mode)), path
    assert _debugfs_stat(disk, f"{home}/.claude") == (layout.CLI_UID, 0o700)

    label = subprocess.run(["e2label", str(disk)], capture_output=True, text=True, check=True)
    assert label.stdout.strip() == initramfs.ROOT_LABEL
    subprocess.run(["e2fsck", "-f", "-n", str(disk)], capture_output=True, check=True)


def test_the_root_disk_is_sparse_with_headroom(artifacts: VmArtifacts) -> None:
    st = artifacts.disk.stat()
    content = artifacts.manifest["disk"]["content_bytes"]
    assert st.st_size >= content * 1.25 + (512 << 20) - (1 << 20)
    assert st.st_blocks * 512 < st.st_size  # sparse: the headroom takes no space


# -- cache and manifest -----------------------------------------------------------------


def _files(directory: Path) -> dict[str, tuple[int, int, int]]:
    """Each file's inode, mtime and size: a rebuilt or rewritten file changes one of them."""
    found = {}
    for path in sorted(directory.iterdir()):
        st = path.stat()
        found[path.name] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return found


def test_a_second_call_is_a_cache_hit(artifacts: VmArtifacts, test_image: Image) -> None:
    before = _files(artifacts.directory)
    progress = Recorder()
    again = asyncio.run(ensure_vm_artifacts(test_image, progress=progress))
    assert again.directory == artifacts.directory
    assert again.manifest["built_at"] == artifacts.manifest["built_at"]
    # Reused, not rebuilt: no build stage ran (nor waited for the lock), no file was touched.
    assert progress.events == []
    assert _files(artifacts.directory) == before


def test_the_manifest_records_every_file_and_verify_catches_a_change(
    artifacts: VmArtifacts, tmp_path: Path
) -> None:
    m = artifacts.manifest
    assert set(m["files"]) == {"rootfs.ext4", "vmlinuz", "vmlinux", "initrd.img"}
    assert m["image_key"] and m["kernel"]["version"] and m["built_at"]
    load_vm_artifacts(artifacts.directory, verify=True)

    copy = tmp_path / "copy"
    copy.mkdir()
    for entry in artifacts.directory.iterdir():
        if entry.name == INITRD:
            shutil.copyfile(entry, copy / entry.name)
        else:
            os.symlink(entry, copy / entry.name)
    with (copy / INITRD).open("r+b") as fh:  # same size, one byte changed
        fh.seek(100)
        byte = fh.read(1)
        fh.seek(100)
        fh.write(bytes([byte[0] ^ 0xFF]))
    load_vm_artifacts(copy)  # sizes match: the cheap check passes
    with pytest.raises(ImageError, match=r"initrd\.img: sha256 differs"):
        load_vm_artifacts(copy, verify=True)
    (copy / DISK).unlink()
    with pytest.raises(ImageError, match=r"rootfs\.ext4"):
        load_vm_artifacts(copy)


def test_sets_of_removed_images_are_pruned(tmp_path: Path) -> None:
    kept_image = tmp_path / "images" / "kept"
    kept_image.mkdir(parents=True)
    for name, image_path in (("aaaa", kept_image), ("bbbb", tmp_path / "images" / "gone")):
        (tmp_path / "vm" / name).mkdir(parents=True)
        (tmp_path / "vm" / name / "manifest.json").write_text(
            json.dumps({"image_path": str(image_path)})
        )
    assert prune_orphans(tmp_path) == [tmp_path / "vm" / "bbbb"]
    assert sorted(p.name for p in (tmp_path / "vm").iterdir()) == ["aaaa"]
