"""Building: cache hits run nothing, a failure names its stage and leaves nothing; lock; seal."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from remotecli.cli import app
from remotecli.errors import ImageError
from remotecli.images import layout
from remotecli.images.build import build_image
from remotecli.images.chroot import mounts_under
from remotecli.images.progress import BuildFailed, Stage
from remotecli.images.recipe import BuildOptions
from remotecli.images.store import MANIFEST, TMP_PREFIX, Image, build_lock, load_image
from remotecli.images.unit import AGENT_WANTS_LINK
from tests.support.images import Recorder


def _cache(image: Image) -> Path:
    return image.path.parent.parent


def test_a_second_build_with_the_same_inputs_runs_no_stage(test_image: Image) -> None:
    recorder = Recorder()
    options = BuildOptions(test_clis=True, cache_dir=_cache(test_image))
    again = asyncio.run(build_image(options, recorder))
    assert (again.path, recorder.events) == (test_image.path, [])


def test_a_failing_stage_is_named_and_leaves_nothing_behind(test_image: Image) -> None:
    cache = _cache(test_image)
    before = sorted(p.name for p in (cache / "images").iterdir())
    recorder = Recorder()
    options = BuildOptions(
        test_clis=True, extra_packages=("remotecli-no-such-package",), cache_dir=cache
    )
    with pytest.raises(BuildFailed) as caught:
        asyncio.run(build_image(options, recorder))
    error = caught.value
    assert error.stage is Stage.EXTRA_PACKAGES
    assert "stage 'extra packages'" in error.message
    assert "remotecli-no-such-package" in error.message
    assert "What to do:" in error.message
    assert error.to_dict()["stage"] == "extra packages"
    assert ("failed", "extra packages") in recorder.events
    assert ("started", "user") not in recorder.events
    after = sorted(p.name for p in (cache / "images").iterdir())
    assert (after, [n for n in after if n.startswith(TMP_PREFIX)]) == (before, [])
    assert mounts_under(cache) == []


def test_the_build_lock_serialises_builders(tmp_path: Path) -> None:
    order: list[str] = []
    waited: list[str] = []

    async def builder(name: str, hold: float) -> None:
        async with build_lock(tmp_path, waited.append):
            order.append(f"{name} in")
            await asyncio.sleep(hold)
            order.append(f"{name} out")

    async def both() -> None:
        first = asyncio.create_task(builder("a", 0.5))
        await asyncio.sleep(0.1)
        await builder("b", 0)
        await first

    asyncio.run(both())
    assert order == ["a in", "a out", "b in", "b out"]
    assert len(waited) == 1 and f"pid {os.getpid()}" in waited[0]


def _small_copy(image: Image, dest: Path) -> Path:
    """The files ``load_image``'s fast check reads, copied: tamper with them, not the image."""
    rootfs = dest / "rootfs"
    package = layout.PACKAGE_ROOT.lstrip("/") + "/remotecli"
    shutil.copytree(image.rootfs / package, rootfs / package, symlinks=True)
    for path in (layout.AGENT_UNIT_PATH, AGENT_WANTS_LINK):
        (rootfs / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(image.guest(path), rootfs / path.lstrip("/"), follow_symlinks=False)
    bin_dir = rootfs / layout.CLI_BIN.lstrip("/")
    shutil.copytree(image.guest(layout.CLI_BIN), bin_dir, symlinks=True)
    shutil.copy2(image.manifest_path, dest / MANIFEST)
    (dest / MANIFEST).chmod(0o644)
    return dest


def test_load_image_refuses_a_changed_agent_or_unit(test_image: Image, tmp_path: Path) -> None:
    copy = _small_copy(test_image, tmp_path / "img")
    assert load_image(copy).key == test_image.key
    server = copy / "rootfs" / layout.PACKAGE_ROOT.lstrip("/") / "remotecli/agent/server.py"
    server.write_text(server.read_text() + "\n# patched in place\n")
    with pytest.raises(ImageError, match="changed after it was sealed: agent_tree_sha256"):
        load_image(copy)
    assert load_image(copy, verify="none").key == test_image.key


def test_load_image_refuses_an_unsealed_directory(tmp_path: Path) -> None:
    (tmp_path / MANIFEST).write_text(json.dumps({"format": 1, "key": "x", "sealed": False}))
    with pytest.raises(ImageError, match="was not sealed"):
        load_image(tmp_path)
    with pytest.raises(ImageError, match="remotecli image build"):
        load_image(tmp_path / "nothing-here")


def test_the_cli_reports_a_cached_image(test_image: Image) -> None:
    result = CliRunner().invoke(
        app, ["image", "build", "--test-clis", "--cache-dir", str(_cache(test_image))]
    )
    assert result.exit_code == 0, result.output
    assert "cached" in result.output
    assert str(test_image.path) in result.output


def test_the_cli_explains_bad_options_and_exits_1(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["image", "build", "--providers", "cursor", "--cache-dir", str(tmp_path)]
    )
    assert result.exit_code == 1
    assert "unknown provider 'cursor'" in result.output
