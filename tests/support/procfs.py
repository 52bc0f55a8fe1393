"""What the tests read from /proc about processes: one parser of ``stat``, argv and status.

Every test that asks "is it still running", "what is below this pid", or
"which processes name this instance" asks here, so a zombie is told apart
the same way everywhere (its ``stat`` state ``Z``: it holds nothing but its
exit status) and argv is split at NUL bytes once. A process that exits
while it is being read is simply not listed (reads race with exits).

The controller's own walker, ``remotecli.vmm.statedir.processes_naming``
(argv and environment, used by the fake backend to find a VM's CLIs), stays
the product's; ``tests/support/faults.py`` calls it for the same answer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

PROC = Path("/proc")


@dataclass(frozen=True)
class Process:
    pid: int
    ppid: int
    #: The one-letter state of ``/proc/<pid>/stat`` (R, S, D, Z, T...).
    state: str
    comm: str
    argv: tuple[str, ...]
    #: Clock ticks after boot it started at: with the pid, names it across pid reuse.
    starttime: int

    @property
    def zombie(self) -> bool:
        return self.state == "Z"

    @property
    def cmdline(self) -> str:
        """argv joined by spaces (for messages and substring checks)."""
        return " ".join(self.argv)

    def names(self, needle: str) -> bool:
        """Whether its command line holds ``needle``."""
        return needle in self.cmdline


def read(pid: int) -> Process | None:
    """The process ``pid``, or None when it is gone (or not ours to read)."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    # comm is in parentheses and may itself hold ") ": split at the last one.
    comm = stat[stat.index("(") + 1 : stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2 :].split()
    # NUL-terminated arguments; a process that rewrote its argv may drop the last NUL.
    argv = tuple(raw.decode(errors="replace").removesuffix("\0").split("\0")) if raw else ()
    return Process(pid, int(fields[1]), fields[0], comm, argv, int(fields[19]))


def processes() -> Iterator[Process]:
    """Every process we may read, by ascending pid."""
    pids = sorted(int(entry.name) for entry in PROC.iterdir() if entry.name.isdigit())
    for pid in pids:
        process = read(pid)
        if process is not None:
            yield process


def alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie (an orphan waits for init to reap it)."""
    process = read(pid)
    return process is not None and not process.zombie


class Linked(Protocol):
    """Anything that knows its pid and its parent's (a ``Process``, a leak check's record)."""

    @property
    def pid(self) -> int: ...
    @property
    def ppid(self) -> int: ...


def descendants(pid: int, among: Iterable[Linked] | None = None) -> list[int]:
    """Every process below ``pid`` by parent links, zombies included (nearest first)."""
    children: dict[int, list[int]] = {}
    for process in processes() if among is None else among:
        children.setdefault(process.ppid, []).append(process.pid)
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def naming(needle: str) -> list[Process]:
    """Processes whose command line holds ``needle`` (zombies included: check ``.zombie``)."""
    return [p for p in processes() if p.names(needle)]


def status(pid: int) -> dict[str, str]:
    """The fields of ``/proc/<pid>/status`` (``Uid``, ``Gid``, ``Groups``, ``State``...)."""
    lines = (PROC / str(pid) / "status").read_text().splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


def uid(pid: int) -> int:
    """The real uid ``pid`` runs as."""
    return int(status(pid)["Uid"].split()[0])


def cgroup(pid: int) -> str:
    """``/proc/<pid>/cgroup`` as the kernel writes it."""
    return (PROC / str(pid) / "cgroup").read_text()


def environ(pid: int) -> list[bytes]:
    """The environment ``pid`` started with, ``KEY=value`` each."""
    return (PROC / str(pid) / "environ").read_bytes().split(b"\0")


def namespace(pid: int, kind: str) -> str:
    """The ``kind`` namespace (``pid``, ``net``, ``mnt``) ``pid`` is in: ``pid:[4026531836]``."""
    return str((PROC / str(pid) / "ns" / kind).readlink())


def describe(pids: Iterable[int]) -> list[str]:
    """``pid: argv`` of each pid still there (for failure messages)."""
    out = []
    for pid in pids:
        with contextlib.suppress(OSError):
            process = read(pid)
            if process is not None:
                out.append(f"{pid}: {process.cmdline[:200]}")
    return out
