"""The guest kernel: Debian's cloud kernel package, fetched once per version and kept.

    <cache>/vm/kernels/<release>/<version>/
        kernel.json        package name and version, the .deb's sha256, when fetched
        vmlinuz            the bzImage (QEMU boots it)
        vmlinux            the uncompressed ELF inside it (Firecracker on x86_64 wants it)
        modules/           the package's /usr/lib/modules/<kernel version>/ tree

``linux-image-cloud-amd64`` is a metapackage; its ``Depends`` names the real
versioned package (``linux-image-6.12.…+deb13-cloud-amd64``), which is the
one downloaded. apt runs on the host with a private state directory (its own
sources list and package lists under the cache): the host's apt configuration
and the cached Debian base are left alone, and apt still checks the archive's
signatures and the .deb's hash. The package ships no ``modules.dep`` (its
postinst runs depmod), so module dependencies come from each module's own
``.modinfo`` (``depends=``, what depmod reads too).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import lzma
import re
import shutil
import struct
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from remotecli import proc
from remotecli.errors import ImageError
from remotecli.images.chroot import remove_tree
from remotecli.images.debian import KEYRING
from remotecli.images.store import TMP_PREFIX, sha256_file, staged, write_json

META_PACKAGE = "linux-image-cloud-amd64"
KERNEL_RECORD = "kernel.json"
_VERSIONED = re.compile(r"^(linux-image-[0-9][^ ]*-cloud-amd64)\s*(?:\(= ([^)]+)\))?$")


@dataclass(frozen=True)
class Kernel:
    """A fetched kernel package, extracted."""

    path: Path
    record: Mapping[str, Any]

    @property
    def package(self) -> str:
        return str(self.record["package"])

    @property
    def version(self) -> str:
        """The package's version (``6.12.117-1``)."""
        return str(self.record["version"])

    @property
    def release(self) -> str:
        """``uname -r`` (``6.12.117+deb13-cloud-amd64``)."""
        return str(self.record["kernel_release"])

    @property
    def vmlinuz(self) -> Path:
        return self.path / "vmlinuz"

    @property
    def vmlinux(self) -> Path:
        return self.path / "vmlinux"

    @property
    def modules(self) -> Path:
        return self.path / "modules"


def kernels_dir(cache: Path, release: str) -> Path:
    return cache / "vm" / "kernels" / release


def cached_kernel(cache: Path, release: str) -> Kernel | None:
    """The newest kernel fetched for ``release`` before (no network), or None."""
    root = kernels_dir(cache, release)
    if not root.is_dir():
        return None
    found = [k for e in root.iterdir() if not e.name.startswith(TMP_PREFIX)
             and (k := load_kernel(e)) is not None]  # fmt: skip
    return max(found, key=lambda k: str(k.record["fetched_at"]), default=None)


def load_kernel(path: Path) -> Kernel | None:
    try:
        record = json.loads((path / KERNEL_RECORD).read_text())
    except (OSError, ValueError):
        return None
    return Kernel(path, record) if record.get("complete") else None


async def fetch_kernel(
    cache: Path, release: str, mirror: str, on_line: Callable[[str], None] | None = None
) -> Kernel:
    """Resolve the cloud kernel's current version; download and extract it unless cached.

    Call with the build lock held (it writes into the cache).
    """
    apt = _PrivateApt(cache / "vm" / "apt" / release, release, mirror)
    await apt.update(on_line)
    package, version = await apt.versioned_package(META_PACKAGE)
    final = kernels_dir(cache, release) / version
    kernel = load_kernel(final)
    if kernel is not None:
        return kernel
    if final.exists():
        remove_tree(final)
    with staged(final) as tmp:
        deb = await apt.download(package, tmp, on_line)
        record = await _extract(deb, tmp)
        record.update(
            package=package,
            version=version,
            deb=deb.name,
            deb_sha256=sha256_file(deb),
            mirror=mirror,
            release=release,
            fetched_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            complete=True,
        )
        deb.unlink()  # ~35 MB; everything the artifacts need is extracted
        write_json(tmp / KERNEL_RECORD, record)
    return Kernel(final, record)


class _PrivateApt:
    """The host's apt-get with its own sources list, lists and cache (nothing of the host's)."""

    def __init__(self, root: Path, release: str, mirror: str) -> None:
        self.root = root
        for sub in ("lists/partial", "cache/archives/partial"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        sources = root / "sources.list"
        sources.write_text(f"deb [signed-by={KEYRING}] {mirror} {release} main\n")
        self.options = [
            "-o", f"Dir::Etc::SourceList={sources}",
            "-o", "Dir::Etc::SourceParts=/nonexistent",
            "-o", f"Dir::State::Lists={root / 'lists'}",
            "-o", f"Dir::Cache={root / 'cache'}",
            "-o", "Dir::State::status=/dev/null",
            "-o", "APT::Architecture=amd64",
            "-o", "Acquire::Languages=none",
            # The download directory is ours (root-only); apt's _apt user cannot write it.
            "-o", "APT::Sandbox::User=root",
        ]  # fmt: skip

    async def update(self, on_line: Callable[[str], None] | None) -> None:
        await proc.run(
            ["apt-get", *self.options, "-q", "update"], timeout=300, on_line=on_line,
            hint="check access to the Debian mirror (the kernel comes from it)",
        )  # fmt: skip

    async def versioned_package(self, meta: str) -> tuple[str, str]:
        """The real package ``meta`` depends on, and its version."""
        done = await proc.run(["apt-cache", *self.options, "show", meta], timeout=60)
        depends = next((line.split(":", 1)[1] for line in done.stdout.splitlines()
                        if line.startswith("Depends:")), "")  # fmt: skip
        for alternative in depends.split(","):
            match = _VERSIONED.match(alternative.strip())
            if match:
                version = match.group(2) or await self._candidate(match.group(1))
                return match.group(1), version
        raise ImageError(f"{meta} depends on no cloud kernel package (Depends: {depends.strip()})")

    async def _candidate(self, package: str) -> str:
        done = await proc.run(["apt-cache", *self.options, "show", package], timeout=60)
        for line in done.stdout.splitlines():
            if line.startswith("Version:"):
                return line.split(":", 1)[1].strip()
        raise ImageError(f"apt knows no version of {package}")

    async def download(
        self, package: str, where: Path, on_line: Callable[[str], None] | None
    ) -> Path:
        await proc.run(["apt-get", *self.options, "-q", "download", package], timeout=600,
                       cwd=where, on_line=on_line)  # fmt: skip
        debs = sorted(await asyncio.to_thread(lambda: list(where.glob(f"{package}_*.deb"))))
        if len(debs) != 1:
            raise ImageError(f"apt-get download {package} left {[d.name for d in debs]} in {where}")
        return debs[0]


async def _extract(deb: Path, dest: Path) -> dict[str, Any]:
    """vmlinuz, vmlinux and the modules tree from the .deb into ``dest``."""
    tree = dest / "deb"
    await proc.run(["dpkg-deb", "-x", str(deb), str(tree)], timeout=300)
    try:
        vmlinuz = sorted((tree / "boot").glob("vmlinuz-*"))
        if len(vmlinuz) != 1:
            raise ImageError(f"{deb.name} has {len(vmlinuz)} /boot/vmlinuz-* files, not one")
        kernel_release = vmlinuz[0].name.removeprefix("vmlinuz-")
        modules = tree / "usr" / "lib" / "modules" / kernel_release
        if not modules.is_dir():
            raise ImageError(f"{deb.name} has no /usr/lib/modules/{kernel_release}")
        shutil.move(vmlinuz[0], dest / "vmlinuz")
        shutil.move(modules, dest / "modules")
        config = tree / "boot" / f"config-{kernel_release}"
        if config.is_file():
            shutil.move(config, dest / "config")
    finally:
        shutil.rmtree(tree)
    await extract_vmlinux(dest / "vmlinuz", dest / "vmlinux")
    return {"kernel_release": kernel_release}


# -- the ELF inside a bzImage ------------------------------------------------------


async def extract_vmlinux(bzimage: Path, vmlinux: Path) -> None:
    """Write the uncompressed ELF ``vmlinux`` of an x86 bzImage (boot protocol 2.08+).

    The setup header says where the compressed payload starts (``payload_offset``
    at 0x248, counted from the protected-mode code after the setup sectors) and
    how long it is (0x24c). The kernel appends the uncompressed size (4 bytes)
    to zstd/xz payloads, which the decompressors would take for trailing garbage.
    """
    data = await asyncio.to_thread(bzimage.read_bytes)
    if data[0x202:0x206] != b"HdrS":
        raise ImageError(f"{bzimage} is not a bzImage (no HdrS setup header)")
    setup_sects = data[0x1F1] or 4
    offset, length = struct.unpack_from("<II", data, 0x248)
    start = (setup_sects + 1) * 512 + offset
    payload = data[start : start + length]
    if payload.startswith(b"\x28\xb5\x2f\xfd"):  # zstd: Debian's choice
        packed = vmlinux.with_name(f"{vmlinux.name}.zst")
        await asyncio.to_thread(packed.write_bytes, payload[:-4])
        try:
            await proc.run(["zstd", "-d", "-q", "-f", "-o", str(vmlinux), str(packed)],
                           timeout=120, hint="apt-get install zstd")  # fmt: skip
        finally:
            packed.unlink()
    elif payload.startswith(b"\xfd7zXZ\x00"):
        await asyncio.to_thread(vmlinux.write_bytes, lzma.decompress(payload[:-4]))
    elif payload.startswith(b"\x1f\x8b"):
        await asyncio.to_thread(vmlinux.write_bytes, gzip.decompress(payload))
    else:
        raise ImageError(f"unknown bzImage payload compression (magic {payload[:4].hex()})")
    if await asyncio.to_thread(_head, vmlinux, 4) != b"\x7fELF":
        raise ImageError(f"the payload of {bzimage} did not decompress to an ELF file")


# -- modules --------------------------------------------------------------------------


@dataclass(frozen=True)
class Module:
    name: str
    #: Relative to the modules tree (``kernel/drivers/block/virtio_blk.ko.xz``).
    path: str
    depends: tuple[str, ...]

    def load(self, modules: Path) -> bytes:
        """The module's ELF (decompressed: busybox insmod takes plain .ko files)."""
        data = (modules / self.path).read_bytes()
        if self.path.endswith(".xz"):
            return lzma.decompress(data)
        if self.path.endswith(".ko"):
            return data
        raise ImageError(f"cannot decompress {self.path} (only .ko and .ko.xz)")


def module_name(filename: str) -> str:
    return filename.split(".", 1)[0].replace("-", "_")


def resolve_modules(modules: Path, wanted: Iterable[str]) -> tuple[list[Module], list[str]]:
    """``wanted`` and everything they depend on, dependencies first; and those built in.

    A wanted name that is neither a module file nor in ``modules.builtin`` is an error.
    """
    files = {module_name(p.name): p for p in (modules / "kernel").rglob("*.ko*")}
    builtin_file = modules / "modules.builtin"
    builtin = {module_name(Path(line).name) for line in builtin_file.read_text().split()} \
        if builtin_file.is_file() else set()  # fmt: skip
    ordered: list[Module] = []
    seen: set[str] = set()
    built_in: list[str] = []

    def visit(name: str, chain: tuple[str, ...]) -> None:
        name = module_name(name)
        if name in seen:
            return
        seen.add(name)
        if name not in files:
            if name in builtin:
                built_in.append(name)
                return
            raise ImageError(
                f"kernel module {name} (needed by {' <- '.join(chain) or 'the init'}) is "
                f"neither in {modules}/kernel nor built in"
            )
        rel = files[name].relative_to(modules).as_posix()
        module = Module(name, rel, ())
        depends = modinfo(module.load(modules)).get("depends", "")
        deps = tuple(d for d in depends.split(",") if d)
        for dep in deps:
            visit(dep, (name, *chain))
        ordered.append(Module(name, rel, deps))

    for name in wanted:
        visit(name, ())
    return ordered, built_in


def modinfo(elf: bytes) -> dict[str, str]:
    """The ``.modinfo`` section of a 64-bit little-endian module (``key=value`` strings)."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        raise ImageError("not a 64-bit little-endian ELF module")
    shoff, = struct.unpack_from("<Q", elf, 0x28)  # fmt: skip
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x3A)

    def section(i: int) -> tuple[int, int, int]:
        name, _type, _flags, _addr, off, size = struct.unpack_from(
            "<IIQQQQ", elf, shoff + i * shentsize
        )
        return name, off, size

    _, str_off, _ = section(shstrndx)
    for i in range(shnum):
        name_off, off, size = section(i)
        end = elf.index(b"\0", str_off + name_off)
        if elf[str_off + name_off : end] == b".modinfo":
            info: dict[str, str] = {}
            for entry in elf[off : off + size].split(b"\0"):
                key, sep, value = entry.decode(errors="replace").partition("=")
                if sep:
                    info.setdefault(key, value)
            return info
    return {}


def _head(path: Path, size: int) -> bytes:
    with path.open("rb") as fh:
        return fh.read(size)
