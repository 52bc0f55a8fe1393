"""Every host-side subprocess goes through ``run``: a timeout, a process group, a typed error.

On timeout the whole process group is killed (debootstrap, npm and
systemd-nspawn all start children), the output drained, and ``CommandFailed``
raised with the argv, the exit code and the stderr tail. ``on_line`` receives
output lines as they come, for progress displays.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from remotecli.errors import CommandFailed

TAIL_CHARS = 4000


@dataclass(frozen=True)
class Completed:
    argv: list[str]
    exit_code: int
    stdout: str
    stderr: str


async def run(
    argv: Sequence[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stdin: bytes | None = None,
    check: bool = True,
    on_line: Callable[[str], None] | None = None,
    hint: str = "",
) -> Completed:
    """Run ``argv`` to completion; raise ``CommandFailed`` on timeout or (with check) non-zero."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    except FileNotFoundError as exc:
        raise CommandFailed(
            argv, exit_code=None, stderr_tail=f"{argv[0]}: not found",
            hint=hint or f"Install {argv[0]!r} (make up / make test install what they need).",
        ) from exc  # fmt: skip
    out: list[str] = []
    err: list[str] = []

    async def pump(stream: asyncio.StreamReader | None, sink: list[str]) -> None:
        assert stream is not None
        while line := await stream.readline():
            text = line.decode(errors="replace")
            sink.append(text)
            if on_line is not None:
                on_line(text.rstrip("\n"))

    if stdin is not None:
        assert proc.stdin is not None
        proc.stdin.write(stdin)
        with contextlib.suppress(ConnectionError):
            await proc.stdin.drain()
        proc.stdin.close()
    pumps = asyncio.gather(pump(proc.stdout, out), pump(proc.stderr, err))
    try:
        await asyncio.wait_for(asyncio.shield(pumps), timeout)
        code = await asyncio.wait_for(proc.wait(), max(1.0, timeout))
    except TimeoutError:
        kill_group(proc.pid)
        await proc.wait()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(pumps, 5)
        raise CommandFailed(
            argv, exit_code=proc.returncode, stderr_tail=_tail(err) or _tail(out),
            timeout=timeout, hint=hint,
        ) from None  # fmt: skip
    finally:
        # Whatever the command left in its group (daemons, helpers) goes too.
        kill_group(proc.pid)
        if not pumps.done():  # cancelled from outside: reap the readers too
            pumps.cancel()
            with contextlib.suppress(BaseException):
                await pumps
    completed = Completed(list(argv), code, "".join(out), "".join(err))
    if check and code != 0:
        raise CommandFailed(argv, exit_code=code, stderr_tail=_tail(err) or _tail(out), hint=hint)
    return completed


def kill_group(pgid: int, sig: signal.Signals = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _tail(chunks: list[str]) -> str:
    return "".join(chunks)[-TAIL_CHARS:]
