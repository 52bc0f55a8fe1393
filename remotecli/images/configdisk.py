"""The config disk: per-instance files for a VM's /run/agent, as a raw block device.

A VM has no bind mount, so the backend attaches this image as a second
virtio-blk drive and the initramfs's ``/init`` unpacks it into /run/agent
before systemd starts (see initramfs.py). The image is a plain ustar archive
whose first member is the directory ``MARKER`` — ``/init`` recognises the disk
by its first bytes, whatever its device name — followed by ``token`` (0600) and
``agent.env`` (0600, the format of ``layout.env_file``), padded with
zeros to whole 4 KiB blocks (a block device has whole sectors; tar stops at
its end-of-archive blocks). No secret is in a member's or the file's name,
and the file is created 0600.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Mapping
from pathlib import Path

from remotecli.errors import VmError
from remotecli.images import layout

#: The first member's name; also the first bytes of the disk.
MARKER = "remotecli-config"
TOKEN = Path(layout.TOKEN_FILE).name
AGENT_ENV = Path(layout.AGENT_ENV_FILE).name
BLOCK = 4096


def config_disk_bytes(*, token: str, env: Mapping[str, str]) -> bytes:
    if not token or "\n" in token:
        raise VmError("the agent token must be one non-empty line")
    files = {TOKEN: (token + "\n").encode(), AGENT_ENV: layout.env_file(env).encode()}
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        tar.addfile(_info(MARKER, tarfile.DIRTYPE, 0o700))
        for name, data in files.items():
            info = _info(f"{MARKER}/{name}", tarfile.REGTYPE, 0o600)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    data = out.getvalue()
    return data + b"\0" * (-len(data) % BLOCK)


def write_config_disk(path: Path, *, token: str, env: Mapping[str, str]) -> None:
    """Write the config disk for one instance at ``path`` (created 0600, replaced if there)."""
    data = config_disk_bytes(token=token, env=env)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fh.fileno(), 0o600)  # an existing file keeps its mode through O_CREAT
        fh.write(data)


def read_config_disk(path: Path) -> dict[str, bytes]:
    """The files a config disk carries, by name (what /init would put in /run/agent)."""
    with tarfile.open(path, mode="r:") as tar:
        members = tar.getmembers()
        if not members or members[0].name != MARKER or not members[0].isdir():
            raise VmError(f"{path} is not a config disk (its first member is not {MARKER}/)")
        out: dict[str, bytes] = {}
        for member in members[1:]:
            fh = tar.extractfile(member)
            if fh is not None:
                out[member.name.removeprefix(f"{MARKER}/")] = fh.read()
        return out


def _info(name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mtime = 0
    return info
