"""Children: a CLI in a PTY or with pipes, timed, killed with its process group."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import signal
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tools.capture_real_clis.common import ROWS, Json

# --------------------------------------------------------------------------
# children
# --------------------------------------------------------------------------


class Timeline:
    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.events: list[Json] = []

    def now(self) -> float:
        return round(time.monotonic() - self.t0, 3)

    def add(self, kind: str, **fields: Any) -> None:
        self.events.append({"t": self.now(), "kind": kind, **fields})


def _kill_group(pgid: int, exited: threading.Event, timeline: Timeline, grace: float = 2.0) -> None:
    """SIGTERM the process group, SIGKILL it after ``grace`` seconds."""
    if not exited.is_set():
        timeline.add("signal", signal="SIGTERM")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        if not exited.wait(grace):
            timeline.add("signal", signal="SIGKILL", note="still running after SIGTERM")
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)  # also strays left in the group
    exited.wait(10)


class Child:
    """A CLI in a PTY (mode "pty") or with pipes (mode "pipes")."""

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        cwd: Path,
        mode: str = "pty",
        cols: int = 80,
        rows: int = ROWS,
        timeline: Timeline | None = None,
        label: str = "",
    ) -> None:
        self.argv = list(argv)
        self.mode = mode
        self.cols = cols
        self.label = label
        self.timeline = timeline or Timeline()
        self.streams: dict[str, bytearray] = {}
        self.cond = threading.Condition()
        self.threads: list[threading.Thread] = []
        self.start = time.monotonic()
        self.first_output_at: float | None = None
        self.master: int | None = None
        self.chunks: list[tuple[float, str, int]] = []
        if mode == "pty":
            master, slave = os.openpty()
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
            self.proc = subprocess.Popen(
                self.argv,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                env=dict(env),
                cwd=cwd,
                start_new_session=True,
                preexec_fn=_make_controlling_tty,
            )
            os.close(slave)
            self.master = master
            self._reader("pty", master)
        else:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=dict(env),
                cwd=cwd,
                start_new_session=True,
            )
            assert self.proc.stdout is not None and self.proc.stderr is not None
            self._reader("stdout", self.proc.stdout.fileno())
            self._reader("stderr", self.proc.stderr.fileno())
        self.timeline.add("spawn", who=label, pid=self.proc.pid, mode=mode, cols=cols)
        self.exited = threading.Event()
        self.exit_t: float | None = None
        self.killed = False
        threading.Thread(target=self._waiter, daemon=True).start()

    def _waiter(self) -> None:
        code = self.proc.wait()
        self.exit_t = time.monotonic()
        self.timeline.add("exit", who=self.label, code=code, killed_by_capture=self.killed)
        self.exited.set()

    def _reader(self, name: str, fd: int) -> None:
        self.streams[name] = bytearray()

        def run() -> None:
            while True:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:  # EIO: PTY slave closed by every holder
                    chunk = b""
                with self.cond:
                    if not chunk:
                        self.cond.notify_all()
                        return
                    if self.first_output_at is None:
                        self.first_output_at = time.monotonic()
                    self.chunks.append(
                        (round(time.monotonic() - self.timeline.t0, 3), name, len(chunk))
                    )
                    self.streams[name] += chunk
                    self.cond.notify_all()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.threads.append(thread)

    def text(self, stream: str | None = None) -> bytes:
        with self.cond:
            if stream is not None:
                return bytes(self.streams[stream])
            return b"".join(bytes(v) for v in self.streams.values())

    def expect(self, pattern: bytes, timeout: float, stream: str | None = None) -> re.Match[bytes]:
        regex = re.compile(pattern, re.S)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                data = (
                    bytes(self.streams[stream])
                    if stream
                    else b"".join(bytes(v) for v in self.streams.values())
                )
                match = regex.search(data)
                if match:
                    self.timeline.add("matched", who=self.label, pattern=pattern.decode())
                    return match
                left = deadline - time.monotonic()
                if left <= 0:
                    self.timeline.add("timeout", who=self.label, pattern=pattern.decode())
                    raise TimeoutError(f"{self.label}: {pattern!r} not seen in {timeout}s")
                self.cond.wait(min(left, 0.05))

    def send(self, data: bytes, note: str = "") -> None:
        self.timeline.add("send", who=self.label, data=data.decode("utf-8", "replace"), note=note)
        if self.master is not None:
            os.write(self.master, data)
        else:
            assert self.proc.stdin is not None
            self.proc.stdin.write(data)
            self.proc.stdin.flush()

    def close_stdin(self) -> None:
        if self.proc.stdin is not None:
            self.timeline.add("close_stdin", who=self.label)
            self.proc.stdin.close()

    def wait(self, timeout: float) -> int | None:
        if not self.exited.wait(timeout):
            return None
        return self.proc.returncode

    def settle(self, quiet: float = 0.7, timeout: float = 5.0) -> None:
        """Wait until no new output arrived for ``quiet`` seconds."""
        deadline = time.monotonic() + timeout
        last = len(self.text())
        last_change = time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.05)
            size = len(self.text())
            if size != last:
                last, last_change = size, time.monotonic()
            elif time.monotonic() - last_change >= quiet:
                return

    def finish(self, exit_timeout: float = 0.0) -> Json:
        """Wait up to exit_timeout for exit, then kill the group; return facts."""
        code = self.wait(max(exit_timeout, 0.01))
        if code is None:
            self.killed = True
            _kill_group(self.proc.pid, self.exited, self.timeline)
            self.exited.wait(15)
            code = self.proc.returncode
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        for thread in self.threads:
            thread.join(timeout=3)
        if self.master is not None:
            os.close(self.master)
            self.master = None
        first = (
            None if self.first_output_at is None else round(self.first_output_at - self.start, 3)
        )
        return {
            "exit_code": code,
            "exit_signal": -code if code is not None and code < 0 else None,
            "killed_by_capture": self.killed,
            "duration_s": round((self.exit_t or time.monotonic()) - self.start, 3),
            "first_output_s": first,
        }


def _make_controlling_tty() -> None:
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
