"""The golden test image, built once per machine and shared by the whole session.

The first build on a fresh machine runs debootstrap (~1 min); later sessions
find the image in the cache (/var/lib/remotecli, or $REMOTECLI_CACHE_DIR) in
a few milliseconds. pytest-timeout ignores marks on fixtures, so every test
that uses ``test_image`` gets a 900 s budget here: on a cold machine the
build runs inside whichever of them comes first.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from remotecli.images.build import ensure_test_image
from remotecli.images.store import Image, load_image

BUILD_TIMEOUT = 900


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "test_image" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.timeout(BUILD_TIMEOUT))


@pytest.fixture(scope="session")
def test_image() -> Iterator[Image]:
    if os.geteuid() != 0:
        pytest.skip("building the golden image needs root (debootstrap, chroot)")
    image = ensure_test_image()
    yield image
    # Nothing the tests ran inside it (chroots, containers) may have written to it.
    load_image(image.path, verify="full")
