"""The image cache on disk: where images live, the build lock, loading and verifying.

    <cache>/                        $REMOTECLI_CACHE_DIR, default /var/lib/remotecli
      .build.lock                   flock: one builder at a time per cache
      bases/<key>/rootfs/           debootstrap + runtime packages (see debian.py)
      bases/<key>/base.json
      images/<key>/rootfs/          the golden rootfs (read-only: see below)
      images/<key>/manifest.json    inputs, versions, stage times, sizes, seal
      images/.tmp-<key>-*/          a build in progress (renamed into place when sealed)

**Read-only.** Nothing writes into a golden ``rootfs/`` after the build:
every instance runs on an overlay (nspawn ``--volatile=overlay``) or a
copy-on-write disk made from it. Root ignores file modes and ``chattr +i``
would be copied up into instances' overlays (making the credential
directories immutable there), so the guarantee is a check instead: the
manifest holds a seal (content hashes of the agent tree, the unit, the CLI
links, and a stat fingerprint of the whole tree) and ``load_image`` refuses
an image whose files changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import json
import os
import secrets
import stat
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from remotecli.errors import ImageError
from remotecli.images import layout
from remotecli.images.recipe import hash_tree
from remotecli.images.unit import AGENT_WANTS_LINK

CACHE_ENV = "REMOTECLI_CACHE_DIR"
DEFAULT_CACHE_DIR = Path("/var/lib/remotecli")
MANIFEST = "manifest.json"
ROOTFS = "rootfs"
MANIFEST_FORMAT = 1
TMP_PREFIX = ".tmp-"

Verify = Literal["none", "fast", "full"]


def cache_dir(cache: Path | None = None) -> Path:
    return cache or Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR)


def images_dir(cache: Path) -> Path:
    return cache / "images"


def bases_dir(cache: Path) -> Path:
    return cache / "bases"


def guest(rootfs: Path, path: str) -> Path:
    """The host path of ``path`` inside an image (``path`` as the guest sees it)."""
    return rootfs / path.lstrip("/")


@dataclass(frozen=True)
class Image:
    """A sealed golden image directory. Backends use ``path`` / ``rootfs``, never write to it."""

    path: Path
    manifest: Mapping[str, Any]

    @property
    def key(self) -> str:
        return str(self.manifest["key"])

    @property
    def rootfs(self) -> Path:
        return self.path / ROOTFS

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    @property
    def test_clis(self) -> bool:
        return bool(self.manifest["inputs"]["test_clis"])

    @property
    def clis(self) -> dict[str, str]:
        """Executable name → the first line its ``--version`` printed at build time."""
        entries = self.manifest["files"]["cli_entry_points"]
        return {name: str(e["version"]) for name, e in entries.items()}

    def guest(self, path: str) -> Path:
        return guest(self.rootfs, path)


# -- the seal --------------------------------------------------------------------


@dataclass(frozen=True)
class TreeScan:
    """One walk over a rootfs: a stat fingerprint and its sizes."""

    fingerprint: str
    files: int
    #: Allocated bytes, each hardlinked inode once (what ``du -s`` says).
    disk_bytes: int
    #: Of which under CLI_PREFIX (the real CLIs).
    cli_bytes: int


def scan_tree(rootfs: Path) -> TreeScan:
    """Fingerprint every entry's path, type, mode, owner, size, mtime and link target.

    Any write through a normal path changes an mtime or size; content hashes
    of the whole tree (~1 GB with the real CLIs) would take seconds per load.
    """
    h = hashlib.sha256()
    seen: set[tuple[int, int]] = set()
    files = disk = cli = 0
    cli_prefix = layout.CLI_PREFIX.lstrip("/") + "/"

    def walk(directory: Path, rel: str) -> None:
        nonlocal files, disk, cli
        with os.scandir(directory) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            st = entry.stat(follow_symlinks=False)
            path = f"{rel}{entry.name}"
            link = os.readlink(entry.path) if entry.is_symlink() else ""
            h.update(
                f"{path}\0{st.st_mode:o}\0{st.st_uid}\0{st.st_gid}\0{st.st_size}\0"
                f"{st.st_mtime_ns}\0{st.st_rdev}\0{link}\n".encode(errors="surrogateescape")
            )
            files += 1
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                disk += st.st_blocks * 512
                if path.startswith(cli_prefix):
                    cli += st.st_blocks * 512
            if stat.S_ISDIR(st.st_mode):
                walk(Path(entry.path), f"{path}/")

    walk(rootfs, "")
    return TreeScan(h.hexdigest(), files, disk, cli)


def seal(rootfs: Path, cli_links: Mapping[str, str]) -> dict[str, Any]:
    """What ``load_image`` compares later. ``cli_links``: executable → guest path of its link."""
    return {
        "agent_tree_sha256": hash_tree(guest(rootfs, layout.PACKAGE_ROOT) / "remotecli"),
        "unit_sha256": _sha256_file(guest(rootfs, layout.AGENT_UNIT_PATH)),
        "wants_link": os.readlink(guest(rootfs, AGENT_WANTS_LINK)),
        "cli_links": {name: os.readlink(guest(rootfs, p)) for name, p in sorted(cli_links.items())},
    }


def _sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_file(path: Path) -> str:
    return _sha256_file(path)


def check_seal(image: Image, level: Verify) -> list[str]:
    """What changed since the build (empty when nothing did)."""
    if level == "none":
        return []
    stored = image.manifest["seal"]
    cli_links = {n: e["path"] for n, e in image.manifest["files"]["cli_entry_points"].items()}
    problems: list[str] = []
    try:
        now = seal(image.rootfs, cli_links)
    except OSError as exc:
        return [f"cannot read {exc.filename}: {exc.strerror}"]
    for name in ("agent_tree_sha256", "unit_sha256", "wants_link", "cli_links"):
        if now[name] != stored[name]:
            problems.append(f"{name} differs (built {stored[name]!r}, now {now[name]!r})")
    if level == "full" and scan_tree(image.rootfs).fingerprint != stored["rootfs_fingerprint"]:
        problems.append("some file under rootfs/ was added, removed or modified")
    return problems


# -- loading -------------------------------------------------------------------------


def load_image(path: Path, *, verify: Verify = "fast") -> Image:
    """Open a built image; with ``verify`` check that it is sealed and unchanged.

    ``fast`` (default, a few ms) compares the agent tree, the unit and the CLI
    links; ``full`` also the stat fingerprint of the whole rootfs (~0.1-0.5 s).
    """
    manifest_path = path / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise ImageError(
            f"{path} is not a golden image (no {MANIFEST}). Build one: remotecli image build"
        ) from None
    except (OSError, ValueError) as exc:
        raise ImageError(f"cannot read {manifest_path}: {exc}. Remove {path} and rebuild.") from exc
    if manifest.get("format") != MANIFEST_FORMAT or not manifest.get("sealed"):
        raise ImageError(
            f"{path} was not sealed by this version of the builder (format "
            f"{manifest.get('format')!r}). Remove it and run: remotecli image build"
        )
    image = Image(path=path, manifest=manifest)
    problems = check_seal(image, verify)
    if problems:
        raise ImageError(
            f"golden image {path} changed after it was sealed: {'; '.join(problems)}. "
            "Instances must write only to their own overlay. Remove the directory "
            f"(rm -rf {path}) and rebuild it with remotecli image build."
        )
    return image


def list_images(cache: Path | None = None) -> list[Image]:
    """Sealed images in the cache, newest first. Unreadable directories are skipped."""
    root = images_dir(cache_dir(cache))
    if not root.is_dir():
        return []
    images = []
    for entry in root.iterdir():
        if entry.name.startswith(TMP_PREFIX) or not entry.is_dir():
            continue
        try:
            images.append(load_image(entry, verify="none"))
        except ImageError:
            continue
    return sorted(images, key=lambda i: str(i.manifest.get("built_at", "")), reverse=True)


def write_json(path: Path, data: Mapping[str, Any], mode: int = 0o644) -> None:
    """Write, fsync, then rename: a reader sees the old file or the whole new one."""
    tmp = path.with_name(f"{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    with tmp.open("rb") as fh:
        os.fsync(fh.fileno())
    tmp.chmod(mode)
    tmp.rename(path)


# -- the build lock -------------------------------------------------------------------


@contextlib.asynccontextmanager
async def build_lock(
    cache: Path, on_wait: Callable[[str], None] | None = None
) -> AsyncIterator[None]:
    """Hold ``<cache>/.build.lock`` (flock): builders of one cache run one at a time.

    Polled rather than blocking so the wait stays cancellable; the holder
    writes its pid and start time into the file to say who we wait for.
    """
    fd = _open_lock(cache)
    try:
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
            if not told and on_wait is not None:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
                on_wait(f"waiting for another image build to finish ({holder})")
                told = True
            await asyncio.sleep(0.25)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} since {time.strftime('%H:%M:%S')}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the flock


def _open_lock(cache: Path) -> int:
    cache.mkdir(parents=True, exist_ok=True)
    return os.open(cache / ".build.lock", os.O_RDWR | os.O_CREAT, 0o644)


def file_problems(
    directory: Path, recorded: Mapping[str, Any], names: Iterable[str], *, verify: bool
) -> list[str]:
    """How the files ``names`` in ``directory`` differ from their manifest ``recorded`` records
    (``{"size": ..., "sha256": ...}``): missing, resized, or (with verify) other content."""
    problems = []
    for name in names:
        path, want = directory / name, recorded[name]
        try:
            size = path.stat().st_size
        except OSError as exc:
            problems.append(f"{name}: {exc.strerror}")
            continue
        if size != want["size"]:
            problems.append(f"{name}: {size} bytes, built with {want['size']}")
        elif verify and sha256_file(path) != want["sha256"]:
            problems.append(f"{name}: sha256 differs from the manifest's")
    return problems


@contextlib.contextmanager
def staged(final: Path) -> Iterator[Path]:
    """A fresh directory beside ``final`` (same filesystem) that becomes ``final`` when the
    body returns, and is removed when it raises: readers see nothing or the whole result.

    Call with the build lock held.
    """
    from remotecli.images.chroot import remove_tree  # chroot.py needs nothing of ours

    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f"{TMP_PREFIX}{final.name}-{secrets.token_hex(4)}")
    tmp.mkdir(mode=0o755)
    try:
        yield tmp
        tmp.rename(final)
    except BaseException:
        remove_tree(tmp)
        raise
