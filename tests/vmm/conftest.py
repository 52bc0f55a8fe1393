"""Fixtures for the backends, layered by lifecycle: image → backend → instances.

- ``golden``: the test image (``images.build.ensure_test_image``; built once per
  machine, then cached) — skipped where nspawn cannot run (``doctor`` says why).
- ``lab``: an instance factory on a private state root. It owns cleanup
  (``tests/vmm/lab.py``, as the QEMU and Firecracker labs): every instance is
  destroyed (and verified gone) after the test, and when the test failed each
  console is copied into the test's tmp dir and its tail printed, so a failure
  always comes with the boot it happened in.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path

import pytest

from remotecli.images.build import ensure_test_image
from remotecli.testbed import fake_cli_bin_dir
from remotecli.vmm import hostcheck
from remotecli.vmm.base import Backend
from remotecli.vmm.fake.backend import FakeBackend
from remotecli.vmm.nspawn.backend import NspawnBackend
from tests.vmm import lab as lab_helpers
from tests.vmm.lab import Lab

#: pytest-timeout ignores marks on fixtures: a cold machine builds the image
#: (~1 min) inside whichever test asks for it first.
BUILD_TIMEOUT = 900


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        item.stash[lab_helpers.FAILED] = True
        module = item.getparent(pytest.Module)
        if module is not None:  # module-scoped labs (QEMU's) save consoles too
            module.stash[lab_helpers.FAILED] = True
    return report


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "golden" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.timeout(BUILD_TIMEOUT))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def golden() -> Path:
    """The golden rootfs directory (read-only; instances overlay it)."""
    check = next(c for c in hostcheck.assess(hostcheck.gather()) if c.name == "nspawn")
    if not check.can_run:
        pytest.skip("nspawn cannot run here: " + "; ".join(check.reasons))
    return ensure_test_image().rootfs


@pytest.fixture(scope="session")
def state_root() -> Iterator[Path]:
    """A short state root (the agent's socket path must fit 108 bytes); empty at the end."""
    root = Path(tempfile.mkdtemp(prefix="rcli-test-"))
    yield root
    left = sorted(p.name for p in root.iterdir())
    shutil.rmtree(root, ignore_errors=True)
    assert left == [], f"instances left behind in {root}"


@pytest.fixture
def layer(tmp_path: Path) -> Iterator[Path]:
    """An empty layer directory for one faulty variant."""
    path = tmp_path / "layer"
    path.mkdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def _lab(backend: Backend, image: Path, request: pytest.FixtureRequest, tmp_path: Path) -> (
    AsyncIterator[Lab]
):  # fmt: skip
    lab = Lab(backend, image)
    yield lab
    failed = lab_helpers.failed(request)
    problems = await lab_helpers.teardown(lab.created, failed=failed, save_to=tmp_path)
    if problems:
        pytest.fail("\n".join(problems))


@pytest.fixture
async def lab(
    golden: Path,
    state_root: Path,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    anyio_backend: str,
) -> AsyncIterator[Lab]:
    """Instances of the golden image on nspawn."""
    backend = NspawnBackend(state_root, stop_seconds=10.0)
    async for value in _lab(backend, golden, request, tmp_path):
        yield value


@pytest.fixture
async def fake_lab(
    state_root: Path, request: pytest.FixtureRequest, tmp_path: Path, anyio_backend: str
) -> AsyncIterator[Lab]:
    """Instances of the fake backend (the real agent as a host process)."""
    backend = FakeBackend(state_root, cli_path=fake_cli_bin_dir())
    async for value in _lab(backend, Path("/"), request, tmp_path):
        yield value
