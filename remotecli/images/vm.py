"""What a VM backend boots: the golden image as an ext4 disk, the kernel, the initramfs.

    <cache>/vm/
      kernels/<release>/<version>/   Debian's cloud kernel, extracted (kernel.py)
      kernels/micro/<key>/           the micro kernel, built from source (microkernel.py)
      apt/<release>/                 the private apt state that fetched it
      <key>/                         one artifact set (read-only once renamed here)
        rootfs.ext4                  the golden rootfs, label remotecli-root, sparse
        vmlinuz                      bzImage (QEMU -kernel)
        vmlinux                      uncompressed ELF (Firecracker kernel_image_path)
        initrd.img                   gzip'd cpio: busybox, modules, /init (initramfs.py)
        manifest.json                sha256 + size of each file, kernel, busybox, cmdline
      .tmp-<key>-*/                  a build in progress

``key`` hashes the image key, the kernel package version, the initramfs
recipe and the disk recipe. ``microkernel=True`` boots the micro kernel
instead of the cloud kernel (its own sets: the key names the micro build);
everything is built in, so its initramfs carries no modules and /init loads
none. A set is built in a temp directory and renamed
into place under the image cache's build lock: readers see no set or a whole
one. Once a kernel is cached, later builds use it without asking the mirror
(``refresh_kernel=True`` asks for the newest).

Backends never write these files: QEMU opens the disk with ``snapshot=on``
(or a qcow2 overlay), Firecracker gets a per-instance copy (``cp
--reflink=auto --sparse=always``). The guest's writes (CLI logins, npm caches)
fit in the headroom: the disk is ``content x 1.25 + 512 MiB``, a sparse file.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import struct
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from remotecli import proc
from remotecli.errors import ImageError
from remotecli.images import initramfs
from remotecli.images.chroot import remove_tree
from remotecli.images.configdisk import MARKER as CONFIG_MARKER
from remotecli.images.kernel import Kernel, Module, cached_kernel, fetch_kernel, resolve_modules
from remotecli.images.microkernel import ensure_micro_kernel
from remotecli.images.progress import BuildProgress, Stage, StageRunner
from remotecli.images.store import (
    MANIFEST,
    TMP_PREFIX,
    Image,
    build_lock,
    cache_dir,
    file_problems,
    sha256_file,
    staged,
    write_json,
)

VM_MANIFEST_FORMAT = 1
DISK = "rootfs.ext4"
VMLINUZ = "vmlinuz"
VMLINUX = "vmlinux"
INITRD = "initrd.img"
FILES = (DISK, VMLINUZ, VMLINUX, INITRD)
#: The host's busybox from Debian's busybox-static package (a static binary:
#: the initramfs has no libc).
BUSYBOX = Path("/bin/busybox")
#: Both VMMs boot with this; backends append their own words (e.g. ``remotecli.net=``).
#: console=ttyS0: the console the readiness code reads; panic=-1 + reboot=k: a
#: panic or a failed /init ends the VMM process (QEMU -no-reboot, Firecracker
#: exits on the i8042 reset); pci=off: every device is virtio-mmio, and probing
#: for a PCI bus costs time under TCG; rdinit=/init names the initramfs's init.
BASE_CMDLINE = "console=ttyS0 reboot=k panic=-1 pci=off rdinit=/init"
#: Headroom for the guest's writes on top of the image's content.
DISK_FACTOR = 1.25
DISK_EXTRA_BYTES = 512 << 20
#: mkfs.ext4's default (one inode per 16 KiB) is too few for npm trees.
INODES_EXTRA = 65536
DISK_RECIPE = f"ext4 4k blocks, -m 0, x{DISK_FACTOR} + {DISK_EXTRA_BYTES}, 2 inodes/file + 65536"


@dataclass(frozen=True)
class VmArtifacts:
    """One built set: everything a VM backend needs to boot the image."""

    directory: Path
    manifest: Mapping[str, Any]

    @property
    def key(self) -> str:
        return str(self.manifest["key"])

    @property
    def disk(self) -> Path:
        """The root disk (ext4, label ``remotecli-root``). Never open it writable."""
        return self.directory / DISK

    @property
    def vmlinuz(self) -> Path:
        return self.directory / VMLINUZ

    @property
    def vmlinux(self) -> Path:
        return self.directory / VMLINUX

    @property
    def initrd(self) -> Path:
        return self.directory / INITRD

    @property
    def kernel_version(self) -> str:
        """``uname -r`` of the guest kernel."""
        return str(self.manifest["kernel"]["kernel_release"])

    @property
    def cmdline(self) -> str:
        return str(self.manifest["cmdline"])

    @property
    def image_key(self) -> str:
        return str(self.manifest["image_key"])


def vm_dir(cache: Path) -> Path:
    return cache / "vm"


def artifacts_key(image: Image, kernel: Kernel, recipe_sha256: str) -> str:
    h = hashlib.sha256()
    for part in (image.key, kernel.package, kernel.version, recipe_sha256, DISK_RECIPE,
                 BASE_CMDLINE, str(VM_MANIFEST_FORMAT)):  # fmt: skip
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:16]


async def ensure_vm_artifacts(
    image: Image,
    *,
    cache: Path | None = None,
    progress: BuildProgress | None = None,
    refresh_kernel: bool = False,
    microkernel: bool = False,
) -> VmArtifacts:
    """The VM artifacts of ``image``: reused when built before, else built now (~30 s).

    ``microkernel``: boot the micro kernel (built first when not cached: ~7 min).
    """
    cache = cache_dir(cache)
    base = image.manifest["inputs"]["base"]
    release, mirror = str(base["release"]), str(base["mirror"])
    busybox_sha = await asyncio.to_thread(_check_busybox, BUSYBOX)
    modules = () if microkernel else initramfs.MODULES
    recipe = initramfs.recipe_sha256(busybox_sha, modules)
    if microkernel:
        # Under its own lock: a ~7 min compile must not hold up image builds.
        micro = await ensure_micro_kernel(
            cache=cache, release=release, mirror=mirror, progress=progress, refresh=refresh_kernel
        )
        kernel: Kernel | None = micro.as_kernel()
    else:
        kernel = None if refresh_kernel else cached_kernel(cache, release)
    if kernel is not None:
        found = _existing(vm_dir(cache) / artifacts_key(image, kernel, recipe))
        if found is not None:
            return found
    if os.geteuid() != 0:
        raise ImageError(
            "building VM artifacts needs root (the disk keeps the image's file owners): "
            "run `sudo remotecli image vm`"
        )
    stages = StageRunner(progress)
    async with build_lock(cache, stages.waiting):
        started = time.monotonic()
        if kernel is None:
            async with stages.stage(
                Stage.VM_KERNEL, f"apt-get download {release}'s cloud kernel",
                f"check access to {mirror} (the kernel package comes from it)",
            ) as on_line:  # fmt: skip
                kernel = await fetch_kernel(cache, release, mirror, on_line)
        elif microkernel:
            stages.skipped(Stage.VM_KERNEL, f"micro kernel {kernel.release}")
        else:
            stages.skipped(Stage.VM_KERNEL, f"cached {kernel.package} {kernel.version}")
        final = vm_dir(cache) / artifacts_key(image, kernel, recipe)
        found = _existing(final)
        if found is not None:  # built meanwhile, or by the builder we waited for
            return found
        _remove_abandoned(vm_dir(cache))
        prune_orphans(cache)
        with staged(final) as tmp:
            manifest = await _build(image, kernel, modules, busybox_sha, tmp, stages)
            manifest.update(
                key=final.name,
                initramfs_recipe_sha256=recipe,
                stages=[r.to_json() for r in stages.records],
                build_seconds=round(time.monotonic() - started, 2),
            )
            write_json(tmp / MANIFEST, manifest, mode=0o444)
    return load_vm_artifacts(final)


def load_vm_artifacts(directory: Path, *, verify: bool = False) -> VmArtifacts:
    """Open a built set; every file must exist with its recorded size (and sha256 with verify)."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except FileNotFoundError:
        raise ImageError(
            f"{directory} holds no VM artifacts (no {MANIFEST}): run remotecli image vm"
        ) from None
    except (OSError, ValueError) as exc:
        raise ImageError(f"cannot read {directory / MANIFEST}: {exc}; remove {directory}") from exc
    if manifest.get("format") != VM_MANIFEST_FORMAT:
        raise ImageError(f"{directory} was built by another version of the builder: remove it")
    problems = file_problems(directory, manifest["files"], FILES, verify=verify)
    if problems:
        raise ImageError(
            f"VM artifacts {directory} changed after they were built: {'; '.join(problems)}. "
            f"Backends must not write them. Remove the directory (rm -rf {directory}) and "
            "run remotecli image vm."
        )
    return VmArtifacts(directory, manifest)


def prune_orphans(cache: Path) -> list[Path]:
    """Remove artifact sets whose image is gone (pruned test images): ~0.4 GB each.

    Call with the build lock held. Returns what was removed.
    """
    removed = []
    root = vm_dir(cache)
    for manifest in root.glob(f"*/{MANIFEST}") if root.is_dir() else ():
        try:
            image_path = Path(json.loads(manifest.read_text())["image_path"])
        except (OSError, ValueError, KeyError):
            continue
        if not image_path.is_dir():
            remove_tree(manifest.parent)
            removed.append(manifest.parent)
    return removed


def _existing(directory: Path) -> VmArtifacts | None:
    return load_vm_artifacts(directory) if (directory / MANIFEST).is_file() else None


async def _build(
    image: Image,
    kernel: Kernel,
    wanted: tuple[str, ...],
    busybox_sha: str,
    tmp: Path,
    stages: StageRunner,
) -> dict[str, Any]:
    async with stages.stage(Stage.VM_INITRAMFS, f"busybox + modules of {kernel.release} + /init"):
        modules, built_in = await asyncio.to_thread(
            _write_boot_files, kernel, wanted, busybox_sha, tmp
        )
    if not wanted:  # the micro kernel: everything the init needs is built in
        built_in = list(initramfs.MODULES)

    sizes = image.manifest["sizes"]
    disk_bytes = _disk_size(int(sizes["rootfs_bytes"]))
    inodes = int(sizes["files"]) * 2 + INODES_EXTRA
    async with stages.stage(
        Stage.VM_DISK, f"mkfs.ext4 -d rootfs ({disk_bytes >> 20} MiB, sparse)",
        "mkfs.ext4 and e2fsck come with e2fsprogs (apt-get install e2fsprogs)",
    ) as on_line:  # fmt: skip
        await make_disk(image.rootfs, tmp / DISK, disk_bytes, inodes, on_line)

    async with stages.stage(Stage.VM_SEAL, "sha256 of every file"):
        files = {name: await asyncio.to_thread(_file_record, tmp / name) for name in FILES}
        for name in FILES:
            (tmp / name).chmod(0o444)  # a reminder to tools that honour modes: never write
    return {
        "format": VM_MANIFEST_FORMAT,
        "image_key": image.key,
        "image_path": str(image.path),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cmdline": BASE_CMDLINE,
        "root_label": initramfs.ROOT_LABEL,
        "config_marker": CONFIG_MARKER,
        "kernel": {
            "package": kernel.package,
            "version": kernel.version,
            "kernel_release": kernel.release,
            "deb_sha256": kernel.record["deb_sha256"],
            "mirror": kernel.record["mirror"],
        },
        "busybox": {
            "path": str(BUSYBOX),
            "sha256": busybox_sha,
            "package": await _package_version("busybox-static"),
        },
        "modules": {"load_order": [m.name for m in modules], "built_in": built_in},
        "disk": {
            "content_bytes": int(sizes["rootfs_bytes"]),
            "size_bytes": disk_bytes,
            "inodes": inodes,
            "recipe": DISK_RECIPE,
        },
        "files": files,
    }


def _write_boot_files(
    kernel: Kernel, wanted: tuple[str, ...], busybox_sha: str, dest: Path
) -> tuple[list[Module], list[str]]:
    """The initramfs (modules resolved from the kernel package) and both kernel images."""
    modules, built_in = resolve_modules(kernel.modules, wanted) if wanted else ([], [])
    busybox = BUSYBOX.read_bytes()
    if hashlib.sha256(busybox).hexdigest() != busybox_sha:
        raise ImageError(f"{BUSYBOX} changed during the build (a busybox upgrade?): retry")
    contents = [(m.name, m.load(kernel.modules)) for m in modules]
    (dest / INITRD).write_bytes(initramfs.build(busybox, contents))
    shutil.copyfile(kernel.vmlinuz, dest / VMLINUZ)
    shutil.copyfile(kernel.vmlinux, dest / VMLINUX)
    return modules, built_in


async def make_disk(
    rootfs: Path,
    disk: Path,
    size: int,
    inodes: int,
    on_line: Callable[[str], None] | None = None,
) -> None:
    """A sparse ext4 image of ``rootfs`` (owners, modes, xattrs, hard links kept), checked."""
    with disk.open("wb") as fh:
        fh.truncate(size)
    await proc.run(
        ["mkfs.ext4", "-q", "-F", "-t", "ext4", "-L", initramfs.ROOT_LABEL, "-b", "4096",
         "-m", "0", "-N", str(inodes), "-E", "lazy_itable_init=0,lazy_journal_init=0",
         "-d", str(rootfs), str(disk)],
        timeout=600, on_line=on_line,
    )  # fmt: skip
    # -f: check even a clean filesystem; -n: read-only. Catches a truncated copy.
    await proc.run(["e2fsck", "-f", "-n", str(disk)], timeout=300, on_line=on_line)


def _disk_size(content: int) -> int:
    size = int(content * DISK_FACTOR) + DISK_EXTRA_BYTES
    return -(-size // (1 << 20)) << 20  # whole MiB


def _file_record(path: Path) -> dict[str, Any]:
    return {"sha256": sha256_file(path), "size": path.stat().st_size}


def _check_busybox(path: Path) -> str:
    """sha256 of the host's static busybox; refuse a dynamically linked one."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageError(
            f"{path} is missing: apt-get install busybox-static (make up / make test do)"
        ) from None
    if _has_interpreter(data):
        raise ImageError(
            f"{path} is dynamically linked (the initramfs has no libc): "
            "apt-get install busybox-static"
        )
    return hashlib.sha256(data).hexdigest()


def _has_interpreter(elf: bytes) -> bool:
    """Whether a 64-bit ELF has a PT_INTERP program header (needs a dynamic loader)."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2:
        raise ImageError("busybox is not a 64-bit ELF executable")
    phoff, = struct.unpack_from("<Q", elf, 0x20)  # fmt: skip
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    return any(struct.unpack_from("<I", elf, phoff + i * phentsize)[0] == 3 for i in range(phnum))


async def _package_version(package: str) -> str:
    done = await proc.run(["dpkg-query", "-W", "-f=${Version}", package], timeout=30, check=False)
    return done.stdout.strip() if done.exit_code == 0 else "unknown"


def _remove_abandoned(parent: Path) -> None:
    """Temp directories of builders that died (we hold the lock: nobody else builds)."""
    if parent.is_dir():
        for entry in parent.iterdir():
            if entry.name.startswith(TMP_PREFIX):
                remove_tree(entry)
        for entry in (parent / "kernels").glob(f"*/{TMP_PREFIX}*"):
            if entry.parent.name != "micro":  # built under microkernel.py's own lock
                remove_tree(entry)
