"""Running commands inside a rootfs being built, and removing trees safely.

Every command that needs ``/proc`` runs in fresh mount and PID namespaces
(``unshare --mount --pid --fork --kill-child --mount-proc``): the /proc mount
exists only in that namespace, so it disappears with the command even when
the builder is SIGKILLed — no host mount to forget in a ``finally`` — and a
daemon that a package's postinst starts dies with the namespace's PID 1.
``policy-rc.d`` additionally tells invoke-rc.d not to start anything.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from remotecli import proc
from remotecli.errors import CommandFailed, ImageError

#: PATH inside the image for build-time commands.
GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
GUEST_ENV: Mapping[str, str] = {
    "PATH": GUEST_PATH,
    "HOME": "/root",
    "LC_ALL": "C.UTF-8",
    "DEBIAN_FRONTEND": "noninteractive",
    # Our own build-time Python runs must not litter the image with .pyc files.
    "PYTHONDONTWRITEBYTECODE": "1",
}
POLICY_RC_D = "/usr/sbin/policy-rc.d"


def isolated(argv: Sequence[str], proc_mount: Path | None = None) -> list[str]:
    """``argv`` wrapped in new mount + PID namespaces with a private /proc.

    ``proc_mount``: where the fresh /proc goes (the rootfs's /proc for a
    chroot); default the namespace's own /proc (for debootstrap, which mounts
    its own inside the target — those mounts die with the namespace too).
    """
    where = f"--mount-proc={proc_mount}" if proc_mount is not None else "--mount-proc"
    return ["unshare", "--mount", "--pid", "--fork", "--kill-child", where, *argv]


async def run_in_root(
    root: Path,
    argv: Sequence[str],
    *,
    timeout: float = 120.0,
    env: Mapping[str, str] | None = None,
    on_line: Callable[[str], None] | None = None,
    hint: str = "",
) -> proc.Completed:
    """Run ``argv`` chrooted into ``root`` with a clean environment (``GUEST_ENV`` + ``env``)."""
    guest_env = {**GUEST_ENV, **(env or {})}
    wrapped = isolated(
        ["chroot", str(root), "/usr/bin/env", "-i", *(f"{k}={v}" for k, v in guest_env.items()),
         *argv],
        proc_mount=root / "proc",
    )  # fmt: skip
    try:
        return await proc.run(wrapped, timeout=timeout, env=_host_env(), on_line=on_line, hint=hint)
    except CommandFailed as exc:
        # Name the command as a person would type it, not the namespace plumbing.
        raise CommandFailed(
            ["chroot", str(root), *argv], exit_code=exc.exit_code, stderr_tail=exc.stderr_tail,
            timeout=exc.timeout, hint=hint,
        ) from exc  # fmt: skip


async def run_isolated(
    argv: Sequence[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    on_line: Callable[[str], None] | None = None,
    hint: str = "",
) -> proc.Completed:
    """Run a host command whose mounts must not outlive it (debootstrap)."""
    return await proc.run(
        isolated(argv), timeout=timeout, env={**_host_env(), **(env or {})}, on_line=on_line,
        hint=hint,
    )  # fmt: skip


def _host_env() -> dict[str, str]:
    # Only what the host tools need: a builder's own PYTHON*/npm_* settings
    # must not leak into the image's commands.
    return {"PATH": os.environ.get("PATH", GUEST_PATH), "LC_ALL": "C.UTF-8"}


@contextlib.contextmanager
def no_daemons(root: Path) -> Iterator[None]:
    """policy-rc.d = 101 ("action forbidden") while packages are installed; removed after."""
    path = root / POLICY_RC_D.lstrip("/")
    path.write_text("#!/bin/sh\n# remotecli image build: no daemons in the chroot\nexit 101\n")
    path.chmod(0o755)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path`` in this process's mount namespace."""
    top = os.path.realpath(path)
    found = []
    with open("/proc/self/mounts", encoding="utf-8") as fh:
        for line in fh:
            fields = line.split()
            if len(fields) < 2:
                continue
            # /proc/self/mounts escapes space, tab, newline and backslash as octal.
            point = (
                fields[1].replace("\\040", " ").replace("\\011", "\t")
                .replace("\\012", "\n").replace("\\134", "\\")
            )  # fmt: skip
            if point == top or point.startswith(top.rstrip("/") + "/"):
                found.append(point)
    return found


def remove_tree(path: Path) -> None:
    """Remove a build directory; refuse when something is mounted inside it.

    A mount there would be a bug (see the module docstring), but ``rmtree``
    would descend into it — into a host /proc, /dev or worse — so check first.
    """
    if not os.path.lexists(path):
        return
    mounted = mounts_under(path)
    if mounted:
        raise ImageError(
            f"cannot remove {path}: still mounted inside it: {', '.join(mounted)}. "
            f"Unmount them (umount -R {mounted[0]}) and remove the directory by hand."
        )
    shutil.rmtree(path)
