"""An image with the REAL Codex CLI from npm, run on the image's own node.

Cheap after the first time: the Debian base is the test image's, and npm
finds the pinned tarballs in its cache (tests/support/realcli_install.py put them
there); ~10 s here. Skipped, saying why, when npm has neither.
"""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from remotecli.images import layout
from remotecli.images.build import build_image
from remotecli.images.clis import resolve_in_root
from remotecli.images.recipe import BuildOptions
from remotecli.images.store import Image
from remotecli.providers import PROVIDERS
from tests.support.images import in_image
from tests.support.realcli_install import install_real_clis, npm_registry_reachable

pytestmark = [pytest.mark.realcli, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def codex_image(test_image: Image) -> Image:
    try:
        install_real_clis(timeout=900)  # fills npm's cache once per machine
    except RuntimeError as exc:
        if npm_registry_reachable(timeout=15):
            raise
        pytest.skip(f"the npm registry does not answer and the CLIs are not cached: {exc}")
    options = BuildOptions(providers=("codex",), cache_dir=test_image.path.parent.parent)
    return asyncio.run(build_image(options))


def test_the_real_codex_runs_on_the_image_node(codex_image: Image) -> None:
    version = PROVIDERS["codex"].npm_version
    link = f"{layout.CLI_BIN}/codex"
    assert in_image(codex_image, link, "--version").stdout.strip() == f"codex-cli {version}"
    target = resolve_in_root(codex_image.rootfs, link)
    assert target.startswith(f"{layout.CLI_PREFIX}/node_modules/@openai/codex/")
    entry = codex_image.manifest["files"]["cli_entry_points"]["codex"]
    digest = hashlib.sha256(codex_image.guest(target).read_bytes()).hexdigest()
    assert (entry["package"], entry["sha256"]) == (f"@openai/codex@{version}", digest)
    assert codex_image.clis == {"codex": f"codex-cli {version}"}
    assert codex_image.manifest["sizes"]["cli_bytes"] > 0


def test_real_and_fake_images_share_the_base_but_not_the_key(
    codex_image: Image, test_image: Image
) -> None:
    real, fake = codex_image.manifest, test_image.manifest
    assert real["base"]["key"] == fake["base"]["key"]
    assert codex_image.key != test_image.key
    assert not codex_image.guest(f"{layout.PACKAGE_ROOT}/remotecli/testbed").exists()
