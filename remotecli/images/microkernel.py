"""The micro kernel: a minimal guest kernel built from Debian's kernel source, everything built in.

Debian's cloud kernel (``kernel.py``, the default) has virtio-mmio, virtio-blk
and virtio-net as modules, so the initramfs must load them before it finds a
disk. The micro kernel is ``make tinyconfig`` plus our fragment
(``microkernel.config``: virtio-mmio with command-line devices, virtio
blk/net/vsock/rng, ext4, cgroup v2 and what systemd 257 wants, the 8250
console, KVM guest + kvmclock, PVH, ACPI), with no modules at all: it boots
faster (no module loading, no drivers probed for hardware a microVM never
has) and Firecracker can start its ELF through PVH.

    <cache>/vm/kernels/micro/
      .build.lock              flock: one kernel build at a time (not the image lock:
                               a build takes ~7 min on 2 cores)
      <key>/                   one build (read-only once renamed here)
        vmlinux                the ELF (Firecracker kernel_image_path)
        vmlinuz                the bzImage (QEMU -kernel)
        config                 the final .config
        manifest.json          sha256 + size of each file, source package, build time
      .tmp-<key>-*/            a build in progress: source, objects, outputs

``key`` hashes the source package and version, the fragment and the build
recipe. The source is ``linux-source-<major>`` of the guest's Debian release
(trixie: 6.12, the same kernel series as the cloud kernel the image would
otherwise boot), fetched by the same private apt as the cloud kernel. Once a
build is cached, later calls use it without asking the mirror
(``refresh=True`` asks for a newer source version).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from remotecli import proc
from remotecli.errors import ImageError
from remotecli.images.chroot import remove_tree
from remotecli.images.kernel import Kernel, _PrivateApt
from remotecli.images.progress import BuildProgress, Stage, StageRunner
from remotecli.images.recipe import DEFAULT_MIRROR, DEFAULT_RELEASE
from remotecli.images.store import (
    MANIFEST,
    TMP_PREFIX,
    build_lock,
    file_problems,
    sha256_file,
    staged,
    write_json,
)

MANIFEST_FORMAT = 1
FRAGMENT = Path(__file__).with_name("microkernel.config")
#: Debian's kernel source package per guest release (``linux-source-<major>``).
SOURCE_SERIES = {"trixie": "6.12", "bookworm": "6.1"}
VMLINUX = "vmlinux"
VMLINUZ = "vmlinuz"
CONFIG = "config"
FILES = (VMLINUX, VMLINUZ, CONFIG)
#: ``uname -r`` is the source's version plus this.
LOCALVERSION = "-remotecli-micro"
#: How the kernel is made; part of the key, so a change rebuilds.
RECIPE = (
    "make tinyconfig; merge_config.sh -m fragment; make olddefconfig; "
    f"make -j bzImage vmlinux LOCALVERSION={LOCALVERSION} KBUILD_BUILD_USER/HOST=remotecli"
)
#: Debian packages the build runs (``make install`` installs them as ``KERNEL_BUILD_PACKAGES``).
BUILD_PACKAGES = ("gcc", "make", "bc", "bison", "flex", "libelf-dev", "libssl-dev", "cpio",
                  "xz-utils", "zstd")  # fmt: skip
#: A cold build is ~7 min on 2 cores; a slow or busy machine gets plenty more.
COMPILE_TIMEOUT = 3600.0
_OPTION = re.compile(r"^(CONFIG_[A-Z0-9_]+)=(.*)$")
_NOT_SET = re.compile(r"^# (CONFIG_[A-Z0-9_]+) is not set$")


@dataclass(frozen=True)
class MicroKernel:
    """One cached build."""

    directory: Path
    manifest: Mapping[str, Any]

    @property
    def key(self) -> str:
        return str(self.manifest["key"])

    @property
    def vmlinux(self) -> Path:
        return self.directory / VMLINUX

    @property
    def vmlinuz(self) -> Path:
        return self.directory / VMLINUZ

    @property
    def config(self) -> Path:
        return self.directory / CONFIG

    @property
    def release(self) -> str:
        """``uname -r`` in the guest (``6.12.117-remotecli-micro``)."""
        return str(self.manifest["kernel_release"])

    def as_kernel(self) -> Kernel:
        """The build as ``vm.py`` uses a kernel package (it has no modules tree)."""
        source = self.manifest["source"]
        return Kernel(self.directory, {
            "package": f"{source['package']}+micro.{self.key}",
            "version": source["version"],
            "kernel_release": self.release,
            "deb_sha256": source["deb_sha256"],
            "mirror": source["mirror"],
            "fetched_at": self.manifest["built_at"],
        })  # fmt: skip


def micro_dir(cache: Path) -> Path:
    return cache / "vm" / "kernels" / "micro"


def source_package(release: str) -> str:
    try:
        return f"linux-source-{SOURCE_SERIES[release]}"
    except KeyError:
        raise ImageError(
            f"no kernel source series known for Debian {release!r} "
            f"(known: {', '.join(SOURCE_SERIES)}): add it to microkernel.SOURCE_SERIES"
        ) from None


def fragment_options(text: str | None = None) -> dict[str, str]:
    """The fragment's options: ``CONFIG_X`` -> ``y``/``n``/a value (comments skipped)."""
    return parse_config(FRAGMENT.read_text() if text is None else text)


def parse_config(text: str) -> dict[str, str]:
    """A kconfig file as a dict; ``# CONFIG_X is not set`` reads as ``n``."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if match := _OPTION.match(line):
            out[match.group(1)] = match.group(2)
        elif match := _NOT_SET.match(line):
            out[match.group(1)] = "n"
    return out


def config_mismatches(final: Mapping[str, str], wanted: Mapping[str, str]) -> list[str]:
    """Each option of ``wanted`` that ``final`` does not have as written (absent counts as n)."""
    return [f"{name}={want} (got {final.get(name, 'n')})"
            for name, want in wanted.items() if final.get(name, "n") != want]  # fmt: skip


def micro_key(package: str, version: str) -> str:
    h = hashlib.sha256()
    for part in (package, version, FRAGMENT.read_text(), RECIPE, str(MANIFEST_FORMAT)):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:16]


def cached_micro_kernel(cache: Path, release: str) -> MicroKernel | None:
    """The newest build for ``release`` with today's fragment and recipe (no network), or None."""
    root = micro_dir(cache)
    found = []
    for manifest in root.glob(f"*/{MANIFEST}") if root.is_dir() else ():
        if manifest.parent.name.startswith(TMP_PREFIX):
            continue
        try:
            kernel = load_micro_kernel(manifest.parent)
        except ImageError:
            continue
        source = kernel.manifest["source"]
        if source["release"] == release and kernel.key == micro_key(
            source["package"], source["version"]
        ):
            found.append(kernel)
    return max(found, key=lambda k: str(k.manifest["built_at"]), default=None)


def load_micro_kernel(directory: Path, *, verify: bool = False) -> MicroKernel:
    """Open a build; every file must exist with its recorded size (and sha256 with verify)."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise ImageError(
            f"{directory} holds no micro kernel ({exc}): remotecli image kernel"
        ) from exc
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ImageError(f"{directory} was built by another version of the builder: remove it")
    problems = file_problems(directory, manifest["files"], FILES, verify=verify)
    if problems:
        raise ImageError(
            f"micro kernel {directory} changed after it was built: {'; '.join(problems)}. "
            f"Remove it (rm -rf {directory}) and run remotecli image kernel."
        )
    return MicroKernel(directory, manifest)


async def ensure_micro_kernel(
    *,
    cache: Path,
    release: str = DEFAULT_RELEASE,
    mirror: str = DEFAULT_MIRROR,
    progress: BuildProgress | None = None,
    refresh: bool = False,
    jobs: int | None = None,
) -> MicroKernel:
    """The micro kernel for guests of ``release``: cached, else built now (~7 min on 2 cores)."""
    package = source_package(release)
    if not refresh and (found := cached_micro_kernel(cache, release)) is not None:
        return found
    if os.geteuid() != 0:
        raise ImageError("building the micro kernel needs root: run `sudo remotecli image kernel`")
    stages = StageRunner(progress)
    root = micro_dir(cache)
    async with build_lock(root, stages.waiting):
        started = time.monotonic()
        if not refresh and (found := cached_micro_kernel(cache, release)) is not None:
            return found  # built by the builder we waited for
        for entry in root.glob(f"{TMP_PREFIX}*"):  # builders that died (we hold the lock)
            remove_tree(entry)
        async with stages.stage(
            Stage.KERNEL_TOOLS, f"Debian packages the build needs ({' '.join(BUILD_PACKAGES)})",
            f"apt-get install {' '.join(BUILD_PACKAGES)} (make install does)",
        ) as on_line:  # fmt: skip
            await ensure_build_packages(on_line)
        apt = _PrivateApt(cache / "vm" / "apt" / release, release, mirror)
        async with stages.stage(
            Stage.KERNEL_SOURCE, f"{package} from {release}",
            f"check access to {mirror} (the kernel source comes from it)",
        ) as on_line:  # fmt: skip
            await apt.update(on_line)
            version = await apt._candidate(package)
        final = root / micro_key(package, version)
        if (final / MANIFEST).is_file():
            return load_micro_kernel(final)
        with staged(final) as tmp:
            async with stages.stage(
                Stage.KERNEL_FETCH, f"download and unpack {package} {version}"
            ) as on_line:  # fmt: skip
                deb = await apt.download(package, tmp, on_line)
                deb_sha256 = await asyncio.to_thread(sha256_file, deb)
                source = await _unpack(deb, package, tmp / "src")
            build = tmp / "build"
            async with stages.stage(
                Stage.KERNEL_CONFIG, f"tinyconfig + {FRAGMENT.name} + olddefconfig",
            ) as on_line:  # fmt: skip
                await configure(source, build, on_line)
            jobs = jobs or os.cpu_count() or 1
            async with stages.stage(
                Stage.KERNEL_COMPILE, f"make -j{jobs} bzImage vmlinux",
                "the last lines of make's output above say what failed",
            ) as on_line:  # fmt: skip
                compile_started = time.monotonic()
                await _make(source, build, [f"-j{jobs}", "bzImage", "vmlinux"], on_line,
                            COMPILE_TIMEOUT)  # fmt: skip
                compile_seconds = round(time.monotonic() - compile_started, 1)
            async with stages.stage(Stage.KERNEL_SEAL, "vmlinux, bzImage, .config; sha256"):
                kernel_release = (build / "include/config/kernel.release").read_text().strip()
                shutil.copyfile(build / "vmlinux", tmp / VMLINUX)
                shutil.copyfile(build / "arch/x86/boot/bzImage", tmp / VMLINUZ)
                shutil.copyfile(build / ".config", tmp / CONFIG)
                await asyncio.to_thread(remove_tree, tmp / "src")
                await asyncio.to_thread(remove_tree, build)
                deb.unlink()
                files = {}
                for name in FILES:
                    path = tmp / name
                    files[name] = {"sha256": await asyncio.to_thread(sha256_file, path),
                                   "size": path.stat().st_size}  # fmt: skip
                    path.chmod(0o444)
            manifest = {
                "format": MANIFEST_FORMAT,
                "key": final.name,
                "kernel_release": kernel_release,
                "source": {
                    "package": package,
                    "version": version,
                    "deb_sha256": deb_sha256,
                    "release": release,
                    "mirror": mirror,
                },
                "fragment_sha256": hashlib.sha256(FRAGMENT.read_bytes()).hexdigest(),
                "config_sha256": files[CONFIG]["sha256"],
                "recipe": RECIPE,
                "compiler": await _first_line(["gcc", "--version"]),
                "jobs": jobs,
                "compile_seconds": compile_seconds,
                "build_seconds": round(time.monotonic() - started, 1),
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "stages": [r.to_json() for r in stages.records],
                "files": files,
            }
            write_json(tmp / MANIFEST, manifest, mode=0o444)
    return load_micro_kernel(final)


async def configure(source: Path, build: Path, on_line: Callable[[str], None]) -> None:
    """``build/.config``: tinyconfig, the fragment merged, olddefconfig; every option kept."""
    await asyncio.to_thread(build.mkdir, parents=True, exist_ok=True)
    await _make(source, build, ["tinyconfig"], on_line, 300)
    config = build / ".config"
    await proc.run(
        [str(source / "scripts/kconfig/merge_config.sh"), "-m", "-O", str(build), str(config),
         str(FRAGMENT)],
        timeout=120, cwd=source, on_line=on_line,
    )  # fmt: skip
    await _make(source, build, ["olddefconfig"], on_line, 300)
    lost = config_mismatches(parse_config(config.read_text()), fragment_options())
    if lost:
        raise ImageError(
            f"olddefconfig dropped options of {FRAGMENT.name} (an unmet dependency, or a "
            f"name this kernel does not have): {', '.join(lost)}. Add what they depend on "
            f"(see `make O={build} menuconfig`, search with /)."
        )


async def ensure_build_packages(on_line: Callable[[str], None] | None = None) -> None:
    """apt-get install the build's packages that are missing (root), else say which."""
    done = await proc.run(["dpkg-query", "-W", "-f=${Package} ${db:Status-Status}\n",
                           *BUILD_PACKAGES], timeout=30, check=False)  # fmt: skip
    installed = {line.split()[0] for line in done.stdout.splitlines()
                 if line.endswith(" installed")}  # fmt: skip
    missing = [p for p in BUILD_PACKAGES if p not in installed]
    if not missing:
        return
    if os.geteuid() != 0:
        raise ImageError(f"the kernel build needs: apt-get install {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    await proc.run(["apt-get", "-q", "update"], timeout=600, env=env, on_line=on_line)
    await proc.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
                   timeout=1200, env=env, on_line=on_line,
                   hint=f"install them yourself: apt-get install {' '.join(missing)}")  # fmt: skip


async def _unpack(deb: Path, package: str, dest: Path) -> Path:
    """The source tree inside ``deb`` (``/usr/src/<package>.tar.xz``), unpacked into ``dest``."""
    await asyncio.to_thread(dest.mkdir)
    tarball = dest / f"{package}.tar.xz"
    script = 'dpkg-deb --fsys-tarfile "$1" | tar -xO "./usr/src/$2.tar.xz" > "$3"'
    await proc.run(["sh", "-c", script, "unpack", str(deb), package, str(tarball)], timeout=600)
    await proc.run(["tar", "-xJf", str(tarball), "-C", str(dest)], timeout=900)
    tarball.unlink()
    tree = dest / package
    if not (tree / "Makefile").is_file():
        raise ImageError(f"{deb.name} did not unpack into a kernel tree at {tree}")
    return tree


async def _make(
    source: Path, build: Path, targets: list[str], on_line: Callable[[str], None], timeout: float
) -> None:
    env = {
        **os.environ,
        # The same inputs give the same banner (no builder's name, host or clock).
        "KBUILD_BUILD_USER": "remotecli",
        "KBUILD_BUILD_HOST": "remotecli",
        "KBUILD_BUILD_TIMESTAMP": "1970-01-01",
        "KBUILD_BUILD_VERSION": "1",
    }
    await proc.run(
        ["make", "-C", str(source), f"O={build}", f"LOCALVERSION={LOCALVERSION}", *targets],
        timeout=timeout, env=env, on_line=on_line,
    )  # fmt: skip


async def _first_line(argv: list[str]) -> str:
    done = await proc.run(argv, timeout=30, check=False)
    return done.stdout.splitlines()[0] if done.stdout else "unknown"
