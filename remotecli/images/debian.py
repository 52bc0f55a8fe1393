"""The Debian base (debootstrap + runtime packages), built once per key and copied per image.

Changing the agent or the CLIs must not re-run a ~45 s debootstrap, so the
base has its own key (release, mirror, package lists) and directory. Each
image starts from a full copy (``cp -a --reflink=auto``: ~320 MB, a few
seconds on ext4, instant on btrfs/xfs). Not ``cp -al``: hard links share
inodes, so the image stages' chown/chmod and every in-place write (dpkg's
status file, ldconfig's cache, ...) would silently change the base under
its unchanged key, and the seal could not tell.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from remotecli import proc
from remotecli.errors import CommandFailed, ImageError
from remotecli.images.chroot import no_daemons, remove_tree, run_in_root, run_isolated
from remotecli.images.progress import Stage, StageRecord, StageRunner
from remotecli.images.recipe import BaseInputs
from remotecli.images.store import ROOTFS, TMP_PREFIX, bases_dir, write_json

BASE_RECORD = "base.json"
#: Passed explicitly: without it a host lacking the keyring makes debootstrap
#: warn and go on *unverified*. Bookworm's keyring (2023.3+) has trixie's keys.
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
_APT_OPTS = ("-y", "-q", "--no-install-recommends", "-o", "Dpkg::Use-Pty=0")


@dataclass(frozen=True)
class Base:
    path: Path
    record: dict[str, Any]

    @property
    def rootfs(self) -> Path:
        return self.path / ROOTFS

    @property
    def key(self) -> str:
        return str(self.record["key"])

    def stage_records(self) -> list[StageRecord]:
        return [
            StageRecord(Stage(s["stage"]), float(s["seconds"]), cached=True,
                        note=f"base {self.key}")
            for s in self.record["stages"]
        ]  # fmt: skip


def load_base(path: Path) -> Base | None:
    try:
        record = json.loads((path / BASE_RECORD).read_text())
    except (OSError, ValueError):
        return None
    return Base(path, record) if record.get("complete") else None


async def ensure_base(inputs: BaseInputs, cache: Path, stages: StageRunner) -> Base:
    """The base for ``inputs``: reused when built before, else debootstrapped now.

    Call with the build lock held.
    """
    final = bases_dir(cache) / inputs.key()
    base = load_base(final)
    if base is not None:
        for record in base.stage_records():
            stages.skipped(record.stage, f"cached base {base.key}", record)
        return base
    tmp = _prepare(final)
    before = len(stages.records)
    try:
        await _debootstrap(inputs, tmp / ROOTFS, stages)
        await _runtime_packages(inputs, tmp / ROOTFS, stages)
        done = {
            "key": inputs.key(),
            "inputs": inputs.to_json(),
            "stages": [r.to_json() for r in stages.records[before:]],
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "complete": True,
        }
        write_json(tmp / BASE_RECORD, done)
        tmp.rename(final)
    except BaseException:
        remove_tree(tmp)
        raise
    return Base(final, done)


def _prepare(final: Path) -> Path:
    """Check the host, clear a stale ``final``, make the temp directory beside it."""
    if shutil.which("debootstrap") is None:
        raise ImageError(
            "debootstrap is not installed on this host: apt-get install debootstrap "
            "(make up / make test install it)"
        )
    if not KEYRING.is_file():
        raise ImageError(
            f"{KEYRING} is missing, so the Debian archive's signatures cannot be checked: "
            "apt-get install debian-archive-keyring"
        )
    if os.path.lexists(final):  # exists without the complete marker: not ours to trust
        remove_tree(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f"{TMP_PREFIX}{final.name}-{secrets.token_hex(4)}")
    tmp.mkdir(mode=0o755)
    return tmp


async def _debootstrap(inputs: BaseInputs, rootfs: Path, stages: StageRunner) -> None:
    argv = [
        "debootstrap", "--variant=minbase", f"--keyring={KEYRING}",
        f"--include={','.join(inputs.debootstrap_packages)}",
        inputs.release, str(rootfs), inputs.mirror,
    ]  # fmt: skip
    async with stages.stage(
        Stage.DEBOOTSTRAP,
        f"debootstrap {inputs.release} from {inputs.mirror}",
        f"check that {inputs.mirror} is reachable from this host and that "
        f"{inputs.release!r} is a Debian release.",
    ) as on_line:
        try:
            # In its own mount namespace: debootstrap mounts /proc and /sys
            # inside the target and a killed debootstrap would leave them.
            await run_isolated(argv, timeout=1200, on_line=on_line)
        except CommandFailed as exc:
            # debootstrap's stderr says little ("see the log"); the log says why.
            log = rootfs / "debootstrap" / "debootstrap.log"
            tail = log.read_text(errors="replace")[-2000:] if log.is_file() else ""
            raise CommandFailed(
                exc.argv, exit_code=exc.exit_code, timeout=exc.timeout,
                stderr_tail=exc.stderr_tail + (f"\n--- {log} (tail) ---\n{tail}" if tail else ""),
            ) from exc  # fmt: skip


async def _runtime_packages(inputs: BaseInputs, rootfs: Path, stages: StageRunner) -> None:
    async with stages.stage(
        Stage.RUNTIME_PACKAGES,
        f"apt-get install {' '.join(inputs.apt_packages)}",
        f"check network access to {inputs.mirror}; apt's own message is above.",
    ) as on_line:
        await apt_install(rootfs, inputs.apt_packages, on_line)


async def apt_install(
    rootfs: Path, packages: tuple[str, ...], on_line: Callable[[str], None]
) -> None:
    """apt-get update + install inside the rootfs, then drop the lists and the .debs."""
    resolv = rootfs / "etc" / "resolv.conf"
    saved = resolv.read_bytes() if resolv.is_file() and not resolv.is_symlink() else None
    # apt in the chroot resolves the mirror's name with the host's resolver.
    resolv.unlink(missing_ok=True)
    shutil.copyfile("/etc/resolv.conf", resolv)
    try:
        with no_daemons(rootfs):
            await run_in_root(rootfs, ["apt-get", "-q", "update"], timeout=600, on_line=on_line)
            await run_in_root(
                rootfs, ["apt-get", "install", *_APT_OPTS, *packages], timeout=1800,
                on_line=on_line,
            )  # fmt: skip
            await run_in_root(rootfs, ["apt-get", "clean"], timeout=120)
    finally:
        resolv.unlink(missing_ok=True)
        if saved is not None:
            resolv.write_bytes(saved)
        lists = rootfs / "var" / "lib" / "apt" / "lists"
        if lists.is_dir():
            # Stale lists are useless in an image (instances never run apt) and ~60 MB.
            for entry in lists.iterdir():
                if entry.is_file():
                    entry.unlink()


async def copy_tree(src: Path, dest: Path) -> None:
    """``cp -a --reflink=auto`` (see the module docstring for why not hard links)."""
    await proc.run(["cp", "-a", "--reflink=auto", str(src), str(dest)], timeout=600)
