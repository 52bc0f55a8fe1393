"""Fault injection for the tests: find what a VM runs on the host, kill it, hear what is said.

On the fake backend a VM is the real agent as a host process (the VMM
process the backend started, leading its own session) plus the CLIs the
agent starts, each leading its own process group. ``processes_of(dir)``
finds all of them by the VM's state directory: it is in the agent's argv
and in every child's ``HOME`` (the agent's ``--home`` is under it). On
nspawn the VMM process is ``systemd-nspawn`` itself (``instance.pid``).

Whether a pid still runs, and what it is: ``tests/support/procfs.py``.

``recording_logs()`` keeps every controller log record (JSON, as production
writes them) so a test can scan them for secrets.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path

from remotecli.controller.logs import JsonFormatter
from remotecli.vmm import statedir


def processes_of(directory: Path) -> list[int]:
    """Pids of live processes whose argv or environment names ``directory``."""
    return statedir.processes_naming(directory)


def sigkill(pid: int) -> None:
    """SIGKILL one process (not its group: its children are the fault's survivors)."""
    os.kill(pid, signal.SIGKILL)


def sigkill_group(pid: int) -> None:
    """SIGKILL the process group ``pid`` leads (what the fake backend started, whole)."""
    os.killpg(pid, signal.SIGKILL)


@contextlib.contextmanager
def recording_logs() -> Iterator[Recorder]:
    """Every log record of the ``remotecli`` loggers, formatted as production writes them."""
    recorder = Recorder()
    ours = logging.getLogger("remotecli")
    old_level = ours.level
    ours.addHandler(recorder)
    ours.setLevel(logging.DEBUG)
    try:
        yield recorder
    finally:
        ours.removeHandler(recorder)
        ours.setLevel(old_level)


def leaks(secrets: dict[str, str], texts: dict[str, str]) -> list[str]:
    """Every secret found in a text, masked, with where (line by line)."""
    return [hit for where, text in texts.items() for hit in find(secrets, where, text)]


class Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def mask(secret: str) -> str:
    return f"{secret[:6]}…({len(secret)} chars)"


def find(secrets: dict[str, str], where: str, text: str) -> list[str]:
    found = []
    for name, secret in secrets.items():
        for number, line in enumerate(text.splitlines(), 1):
            if secret in line:
                found.append(f"{name} {mask(secret)} in {where} line {number}")
    return found
