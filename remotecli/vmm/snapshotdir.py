"""Golden snapshot directories, for every backend that snapshots (qemu, firecracker, fake).

    <cache>/snapshots/
        .lock               the store's lock (one maker at a time)
        .tmp-<name>-<hex>/  a snapshot being made (removed by the next maker if its maker died)
        <name>/             one snapshot (backend + inputs key), renamed into place whole
            golden.json     the store's record (``base.Snapshot``), 0600: the golden token
            ...             the backend's files (qemu: ``state``, ``disk.qcow2``;
                            firecracker: ``snapshot.json``, ``vmstate``, ``memory``, disks)

What is common lives here: the format the backends write their files in
(``SNAPSHOT_FORMAT``), making the directory a snapshot is saved into
(``create``: 0700, new or empty), the files a restore needs (``missing``),
the record (``write_meta``/``load``) and the store (``SnapshotStore``): made
once under a lock, in a temp directory renamed into place, so readers see
none or a whole one. Each backend checks its own files with these and says
in its own words what is wrong (``qemu/snapshot.py``, ``firecracker/snapshot.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import asdict, replace
from pathlib import Path

from remotecli.errors import VmError
from remotecli.vmm import statedir
from remotecli.vmm.base import Snapshot

#: The layout of the backends' files in a snapshot: a restore refuses any other.
SNAPSHOT_FORMAT = 1
#: The store's record of a snapshot; the backend keeps its own files beside it.
META = "golden.json"
TMP_PREFIX = ".tmp-"


def create(directory: Path) -> None:
    """Make ``directory`` for a new snapshot (0700: its files hold the guest's memory, the
    golden token in it); refuse one that is not empty."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if any(directory.iterdir()):
        raise VmError(f"{directory} is not empty: a snapshot goes into a new directory")


def missing(directory: Path, names: Iterable[str]) -> list[str]:
    """Which of the files ``names`` a restore needs are not in ``directory``."""
    return [n for n in names if not (directory / n).is_file()]


def write_meta(snapshot: Snapshot) -> None:
    data = asdict(snapshot)
    data["directory"] = str(snapshot.directory)
    data["image"] = str(snapshot.image)
    statedir.write_private(snapshot.directory / META, json.dumps(data, indent=2, default=str))


def load(directory: Path) -> Snapshot:
    try:
        data = json.loads((directory / META).read_text())
    except (OSError, ValueError) as exc:
        raise VmError(
            f"{directory} is not a usable snapshot ({exc}); remove it and it will be made again"
        ) from exc
    return Snapshot(
        backend=str(data["backend"]),
        directory=directory,
        image=Path(data["image"]),
        golden_token=str(data["golden_token"]),
        boot_phases=dict(data.get("boot_phases") or {}),
        meta=dict(data.get("meta") or {}),
    )


class SnapshotStore:
    """Golden snapshots under ``root``, one directory per name (backend + inputs key)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, name: str) -> Path:
        if not name or "/" in name or name.startswith("."):
            raise VmError(f"bad snapshot name {name!r}")
        return self.root / name

    def find(self, name: str) -> Snapshot | None:
        directory = self.path(name)
        return load(directory) if (directory / META).is_file() else None

    async def ensure(
        self, name: str, make: Callable[[Path], Awaitable[Snapshot]]
    ) -> tuple[Snapshot, bool]:
        """The snapshot called ``name``, made with ``make(temp_dir)`` if missing.

        Returns ``(snapshot, made)``. ``make`` must leave the snapshot's files
        in the directory it is given; it is renamed into place afterwards.
        """
        found = self.find(name)
        if found is not None:
            return found, False
        async with self._lock():
            found = self.find(name)
            if found is not None:
                return found, False
            for stale in self.root.glob(f"{TMP_PREFIX}*"):
                shutil.rmtree(stale, ignore_errors=True)  # a maker killed outright
            tmp = self.root / f"{TMP_PREFIX}{name}-{secrets.token_hex(4)}"
            tmp.mkdir(mode=0o700)
            try:
                made = replace(await make(tmp), directory=tmp)
                write_meta(made)  # load() takes the directory from where the file is
                final = self.path(name)
                tmp.rename(final)
                made = replace(made, directory=final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            return made, True

    def remove(self, name: str) -> None:
        shutil.rmtree(self.path(name), ignore_errors=True)

    @contextlib.asynccontextmanager
    async def _lock(self) -> AsyncIterator[None]:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    await asyncio.sleep(0.1)
            yield
        finally:
            os.close(fd)
