"""Removing superseded images without pulling one from under a running instance.

Every change to the agent's sources makes a new test image (~340 MB): left
alone, a day of development fills the disk. ``ensure_test_image`` therefore
prunes *test* images idle for a day; real images are removed only on request.

An image is in use when any mount namespace on the host (containers mount
their overlay in private ones) has it as an overlay lower layer or a bind
source, or when a process is chrooted inside it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from remotecli.errors import ImageError
from remotecli.images.chroot import remove_tree
from remotecli.images.store import Image, list_images

#: Touched by ensure_test_image each time it hands an image out.
LAST_USED = ".last-used"
DEFAULT_MAX_IDLE = 24 * 3600.0


def mark_used(image: Image) -> None:
    (image.path / LAST_USED).touch()


def idle_seconds(image: Image) -> float:
    stamp = image.path / LAST_USED
    reference = stamp if stamp.exists() else image.manifest_path
    return time.time() - reference.stat().st_mtime


def paths_in_use() -> set[str]:
    """Directories some mount namespace mounts from, or some process is chrooted into."""
    used: set[str] = set()
    namespaces: set[int] = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            root = os.readlink(f"/proc/{entry.name}/root")
            if root != "/":
                used.add(root)
            ns = os.stat(f"/proc/{entry.name}/ns/mnt").st_ino
            if ns in namespaces:
                continue
            namespaces.add(ns)
            with open(f"/proc/{entry.name}/mountinfo", encoding="utf-8") as fh:
                text = fh.read()
        except OSError:  # the process exited, or is not ours to inspect
            continue
        for line in text.splitlines():
            used.update(_mount_sources(line))
    return used


def _mount_sources(line: str) -> list[str]:
    """A mountinfo line's bind root (field 4) and overlay lowerdir= entries."""
    fields = line.split(" - ", 1)
    before = fields[0].split()
    found = [_unescape(before[3])] if len(before) > 3 and before[3] != "/" else []
    if len(fields) == 2:
        for option in fields[1].split()[-1].split(","):
            if option.startswith("lowerdir="):
                found.extend(_unescape(p) for p in option[len("lowerdir=") :].split(":"))
    return found


def _unescape(path: str) -> str:
    return path.replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")


def in_use(image: Image, used: set[str] | None = None) -> bool:
    used = paths_in_use() if used is None else used
    top = str(image.path.resolve())
    return any(p == top or p.startswith(top + "/") for p in used)


def remove_image(image: Image) -> None:
    """Delete an image; refused while an instance or a chroot uses it."""
    if in_use(image):
        raise ImageError(
            f"image {image.key} is in use (an instance's overlay or a chroot): "
            "stop its instances first"
        )
    remove_tree(image.path)


def prune_test_images(
    cache: Path | None = None, *, keep: str, max_idle: float = DEFAULT_MAX_IDLE
) -> list[str]:
    """Remove test images other than ``keep`` idle for ``max_idle`` seconds and unused."""
    candidates = [
        i
        for i in list_images(cache)
        if i.key != keep and i.test_clis and idle_seconds(i) > max_idle
    ]
    if not candidates:
        return []
    used = paths_in_use()
    removed = []
    for image in candidates:
        if not in_use(image, used):
            remove_tree(image.path)
            removed.append(image.key)
    return removed
