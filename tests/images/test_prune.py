"""Superseded test images go; images in use, real images and fresh ones stay."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from remotecli.errors import ImageError
from remotecli.images.prune import (
    LAST_USED,
    _mount_sources,
    in_use,
    paths_in_use,
    prune_test_images,
    remove_image,
)
from remotecli.images.store import MANIFEST, MANIFEST_FORMAT, Image, load_image


def _image(cache: Path, key: str, *, test_clis: bool, idle: float) -> Image:
    path = cache / "images" / key
    (path / "rootfs").mkdir(parents=True)
    manifest = {"format": MANIFEST_FORMAT, "sealed": True, "key": key, "built_at": "x",
                "inputs": {"test_clis": test_clis}}  # fmt: skip
    (path / MANIFEST).write_text(json.dumps(manifest))
    (path / LAST_USED).touch()
    then = time.time() - idle
    os.utime(path / LAST_USED, (then, then))
    return load_image(path, verify="none")


def test_only_idle_superseded_test_images_are_pruned(tmp_path: Path) -> None:
    day = 24 * 3600
    current = _image(tmp_path, "current", test_clis=True, idle=2 * day)
    _image(tmp_path, "old", test_clis=True, idle=2 * day)
    _image(tmp_path, "recent", test_clis=True, idle=60)
    _image(tmp_path, "real", test_clis=False, idle=9 * day)
    removed = prune_test_images(tmp_path, keep=current.key)
    left = sorted(p.name for p in (tmp_path / "images").iterdir())
    assert (removed, left) == (["old"], ["current", "real", "recent"])


def test_mountinfo_sources_are_bind_roots_and_overlay_lower_dirs() -> None:
    overlay = (
        "812 790 0:95 / /run/x/root rw,relatime - overlay overlay "
        "rw,lowerdir=/var/lib/remotecli/images/k/rootfs:/layers/a\\040b,upperdir=/u,workdir=/w"
    )
    bind = "900 812 8:1 /var/lib/remotecli/images/k/rootfs /mnt rw - ext4 /dev/vda rw"
    plain = "22 1 8:1 / / rw,relatime - ext4 /dev/vda rw"
    assert _mount_sources(overlay) == ["/var/lib/remotecli/images/k/rootfs", "/layers/a b"]
    assert _mount_sources(bind) == ["/var/lib/remotecli/images/k/rootfs"]
    assert _mount_sources(plain) == []


def test_an_image_in_use_is_not_removed(tmp_path: Path) -> None:
    image = _image(tmp_path, "busy", test_clis=True, idle=9e9)
    rootfs, sibling = str(image.rootfs.resolve()), f"{image.path.resolve()}-other/rootfs"
    assert (in_use(image, {rootfs}), in_use(image, {sibling})) == (True, False)
    assert str(image.path) not in paths_in_use()  # nothing on this host mounts it
    remove_image(image)
    assert not image.path.exists()


def test_remove_image_refuses_while_chrooted(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("chroot needs root")
    image = _image(tmp_path, "chrooted", test_clis=True, idle=9e9)
    code = "import os, sys, time; os.chroot(sys.argv[1]); print('in', flush=True); time.sleep(60)"
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(image.rootfs)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "in\n"
        with pytest.raises(ImageError, match="in use"):
            remove_image(image)
    finally:
        child.kill()
        child.wait()
        assert child.stdout is not None
        child.stdout.close()
    remove_image(image)
