"""Child processes of the agent: the CLIs, in a PTY (logins) or with pipes (runs).

Every child leads its own process group, so stopping it means stopping the
whole group: Codex's node launcher starts a native binary that holds port 1455,
and killing only the launcher would orphan it. Gemini ignores SIGTERM, so a
stop escalates to SIGKILL after a grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import struct
import termios
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from remotecli.agent.errors import BadRequest

# Wide enough that no CLI wraps a login URL (Gemini's is ~450 characters):
# the transcript then reads each URL on one line.
PTY_COLUMNS = 1000
PTY_ROWS = 50
STOP_GRACE_SECONDS = 2.0


@dataclass(frozen=True)
class RunAs:
    """The unprivileged account the CLIs run as (the agent itself may be root)."""

    uid: int
    gid: int


def _make_controlling_tty() -> None:  # runs in the child between fork and exec
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


async def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: str,
    run_as: RunAs | None,
    pty: bool,
) -> tuple[asyncio.subprocess.Process, int | None]:
    """Start ``argv``; with ``pty`` return the PTY master fd too.

    A missing executable is a clear 400 that names it and the PATH searched.
    """
    ids: dict[str, int] = {}
    if run_as is not None and os.geteuid() == 0:
        ids = {"user": run_as.uid, "group": run_as.gid, "extra_groups": []}  # type: ignore[dict-item]
    master: int | None = None
    try:
        if pty:
            master, slave = os.openpty()
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", PTY_ROWS, PTY_COLUMNS, 0, 0))
            try:
                proc = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=slave,
                    stdout=slave,
                    stderr=slave,
                    env=dict(env),
                    cwd=cwd,
                    start_new_session=True,
                    preexec_fn=_make_controlling_tty,
                    **ids,  # type: ignore[arg-type]
                )
            finally:
                os.close(slave)
            os.set_blocking(master, False)
        else:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=dict(env),
                cwd=cwd,
                start_new_session=True,
                limit=4 * 1024 * 1024,  # one stream-json line can be a whole file's content
                **ids,  # type: ignore[arg-type]
            )
    except FileNotFoundError as exc:
        if master is not None:
            os.close(master)
        raise BadRequest(
            f"{argv[0]!r} is not installed in this VM (searched PATH={env.get('PATH', '')}); "
            "build the image with this provider's CLI",
            code="cli_not_installed",
        ) from exc
    except BaseException:
        if master is not None:
            os.close(master)
        raise
    return proc, master


async def stop_group(proc: asyncio.subprocess.Process, grace: float = STOP_GRACE_SECONDS) -> None:
    """SIGTERM the child's whole process group, SIGKILL what is left after ``grace``.

    Idempotent; safe after the leader exited (its group may still hold children).
    """
    _signal_group(proc.pid, signal.SIGTERM)
    if proc.returncode is None:
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            pass
    _signal_group(proc.pid, signal.SIGKILL)
    if proc.returncode is None:
        await proc.wait()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
