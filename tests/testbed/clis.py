"""Running the test bed's fake CLIs for their tests: a subprocess with a deadline, a pipe reader,
a terminal (every child in its own session, killed with its group when the test ends)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import select
import signal
import socket
import struct
import subprocess
import termios
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from remotecli.testbed import fake_cli_bin_dir

USER = "alice@example.com"


PASSWORD = "correct horse"


ANSI = re.compile(r"\x1b\[[0-9;?<>]*[A-Za-z]|\x1b\][^\x07]*\x07")


def _killpg(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def run_cli(
    argv: Sequence[str],
    env: Mapping[str, str],
    cwd: Path | None = None,
    stdin: str | None = None,
    timeout: float = 20.0,
) -> subprocess.CompletedProcess[str]:
    """Run a fake CLI with pipes; kill its process group on timeout (and always afterwards)."""
    proc = subprocess.Popen(
        list(argv),
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(env),
        cwd=cwd,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        _killpg(proc.pid)
        out, err = proc.communicate()
        raise AssertionError(f"{argv!r} timed out; stdout={out!r} stderr={err!r}") from None
    finally:
        _killpg(proc.pid)
    return subprocess.CompletedProcess(list(argv), proc.returncode, out, err)


class Spawned:
    """A CLI started with pipes; lines are read from the raw fds (no buffering surprises)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self._buffers = {"stdout": b"", "stderr": b""}

    def _fd(self, stream: str) -> int:
        pipe = self.proc.stdout if stream == "stdout" else self.proc.stderr
        assert pipe is not None
        return pipe.fileno()

    def read_until(self, pattern: str, timeout: float = 10.0, stream: str = "stdout") -> str:
        """Text read from ``stream`` up to and including the first line matching ``pattern``."""
        regex = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        while True:
            text = self._buffers[stream].decode("utf-8", "replace")
            for match in regex.finditer(text):
                end = text.find("\n", match.end())
                if end != -1:
                    self._buffers[stream] = text[end + 1 :].encode()
                    return text[: end + 1]
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} not seen on {stream}; got {text!r}")
            ready, _, _ = select.select([self._fd(stream)], [], [], 0.1)
            if ready:
                data = os.read(self._fd(stream), 65536)
                if not data:
                    raise AssertionError(f"{stream} closed before {pattern!r}; got {text!r}")
                self._buffers[stream] += data

    def rest(self, stream: str = "stderr", timeout: float = 10.0) -> str:
        """Everything left on ``stream`` until it closes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self._fd(stream)], [], [], 0.1)
            if ready:
                data = os.read(self._fd(stream), 65536)
                if not data:
                    break
                self._buffers[stream] += data
        text = self._buffers[stream].decode("utf-8", "replace")
        self._buffers[stream] = b""
        return text

    def close(self) -> None:
        _killpg(self.proc.pid)
        self.proc.wait(timeout=5)
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


@contextlib.contextmanager
def spawn(
    argv: Sequence[str], env: Mapping[str, str], cwd: Path | None = None
) -> Iterator[Spawned]:
    proc = subprocess.Popen(
        list(argv),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(env),
        cwd=cwd,
        start_new_session=True,
    )
    spawned = Spawned(proc)
    try:
        yield spawned
    finally:
        spawned.close()


class Pty:
    """A CLI on a real pseudo-terminal (80x40); output is kept raw and as plain text."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], cwd: Path | None) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        try:
            self.proc = subprocess.Popen(
                list(argv),
                stdin=slave,
                stdout=slave,
                stderr=slave,
                env=dict(env),
                cwd=cwd,
                start_new_session=True,
            )
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        self.master = master
        self.raw = b""
        self._pos = 0

    @property
    def text(self) -> str:
        return ANSI.sub("", self.raw.decode("utf-8", "replace")).replace("\r", "")

    def _pump(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return True
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: the child closed the terminal
            return False
        self.raw += data
        return bool(data)

    def expect(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        """Wait for ``pattern`` in the plain text after the previous match."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        alive = True
        while True:
            match = regex.search(self.text, self._pos)
            if match is not None:
                self._pos = match.end()
                return match
            if not alive or time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} not seen; screen: {self.text[-2000:]!r}")
            alive = self._pump(0.05)

    def send(self, text: str) -> None:
        os.write(self.master, text.encode())

    def wait(self, timeout: float = 10.0) -> int:
        """Wait for the exit, reading the terminal meanwhile; the exit code."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self._pump(0.05)
        code = self.proc.poll()
        if code is None:
            raise AssertionError(f"still running after {timeout}s; screen: {self.text[-2000:]!r}")
        while self._pump(0.05) and select.select([self.master], [], [], 0)[0]:
            pass
        return code

    def close(self) -> None:
        _killpg(self.proc.pid)
        self.proc.wait(timeout=5)
        os.close(self.master)


@contextlib.contextmanager
def pty_spawn(
    argv: Sequence[str], env: Mapping[str, str], cwd: Path | None = None
) -> Iterator[Pty]:
    term = Pty(argv, env, cwd)
    try:
        yield term
    finally:
        term.close()


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def bin_path(name: str) -> str:
    return str(fake_cli_bin_dir() / name)
