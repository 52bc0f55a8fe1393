"""What a VM lifecycle could leave on the host: a snapshot before, one after, a readable diff.

    with no_leaks(state_root) as watch:          # or: async with no_leaks(...)
        instance = backend.create(spec(watch.name("cycle")))
        ...
    print(watch.report.render())                 # every category with its counts

``no_leaks`` snapshots the host on entry and again on exit (retrying for up to
``settle`` seconds: a killed process needs a moment to be reaped, a cgroup to
empty) and raises ``AssertionError`` with the report when something is left.
The report lists EVERY category it checked with its count before and after,
so a pass says what it looked at, and a category this host cannot check
(no systemd: no ``machinectl``) says why instead of passing silently.

Categories: processes (descendants of this process, and qemu-system*/
firecracker/jailer/systemd-nspawn/agent processes host-wide), network links of
the host's namespace, network namespaces, mounts (ours and PID 1's), Unix
sockets under the scope paths (``/proc/net/unix`` lists this network
namespace's only: a VM's own netns is checked as a whole), files and
directories below the scope paths (the paths themselves are roots that may
stay), this process's open file descriptors and threads, loop devices, the
cgroups the backends make (``remotecli-*`` and the jailer's
``remotecli-fc/*``), nspawn's propagation dirs, systemd machines.

**Whose is it.** Other tests run on this host at the same time, so a new
host-wide item is a leak only when it is *ours*: it names a scope path or a
marker (``watch.tag`` starts every ``watch.name()``; instance ids, VM ids,
machine, netns and cgroup names all contain the instance id), or it is a new
descendant of this process. Anything new and not attributable is listed in
the report as "not ours" without failing. This process's own fds and threads
are always ours; the idle workers of an event loop's default executor (and
anyio's) are reported but allowed: the loop reuses them and joins them when
it closes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import subprocess
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from tests.support import procfs
from tests.support.poll import NotYet, eventually, eventually_async

#: Commands (argv[0]'s basename) of the processes a backend starts.
VMM_COMMANDS = re.compile(r"^(qemu-system.*|firecracker|jailer|systemd-nspawn|unshare|nsenter)$")
#: Python processes running the agent (fake backend, or an agent escaped from a container).
AGENT_MARK = "remotecli.agent"
#: Pooled threads an event loop reuses and joins at close (not a per-VM resource).
POOL_THREADS = ("asyncio_", "AnyIO worker thread")
#: Host links a backend could make (TAP, veth); other new links are listed as not ours.
VM_LINKS = re.compile(r"^(tap|veth|vnet|fc|vm|rcli|remotecli)")
CGROUP_ROOT = Path("/sys/fs/cgroup")
#: The jailer's shared parent cgroup stays by design (firecracker/jail.py): only its children count.
JAILER_PARENT = "remotecli-fc"
#: What a watch waits for at its end (teardowns still reaping children).
SETTLED = "nothing left behind"
MAX_FILES = 20_000
#: systemd-nspawn's per-machine directory on the host (left by a killed launcher).
NSPAWN_PROPAGATE = Path("/run/systemd/nspawn/propagate")


@dataclass(frozen=True)
class Category:
    name: str
    #: key -> description (the key identifies the item across snapshots).
    items: dict[str, str]
    #: Why this category could not be checked here ("" when it was).
    unavailable: str = ""


@dataclass(frozen=True)
class Scope:
    """What counts as ours: paths (and anything below) and markers (substrings)."""

    paths: tuple[Path, ...]
    markers: tuple[str, ...]

    def owns(self, text: str) -> bool:
        return any(str(p) in text for p in self.paths) or any(m in text for m in self.markers)


@dataclass(frozen=True)
class Row:
    category: str
    before: int
    after: int
    leaked: list[str]
    not_ours: list[str]
    unavailable: str


@dataclass
class LeakReport:
    rows: list[Row] = field(default_factory=list)

    @property
    def leaks(self) -> dict[str, list[str]]:
        return {r.category: r.leaked for r in self.rows if r.leaked}

    @property
    def checked(self) -> list[str]:
        return [r.category for r in self.rows if not r.unavailable]

    def render(self) -> str:
        lines = ["leak check (category: count before -> after):"]
        for r in self.rows:
            if r.unavailable:
                lines.append(f"  {r.category}: NOT CHECKED ({r.unavailable})")
                continue
            verdict = f"LEFT {len(r.leaked)}" if r.leaked else "ok"
            lines.append(f"  {r.category}: {r.before} -> {r.after} {verdict}")
            lines += [f"      left: {item}" for item in r.leaked]
            lines += [f"      new, not ours (ignored): {item}" for item in r.not_ours]
        return "\n".join(lines)


# -- the snapshot -------------------------------------------------------------------------


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    key: str
    comm: str
    state: str
    cmdline: str
    cgroup: str


def _procs() -> dict[int, Proc]:
    found = {}
    for process in procfs.processes():
        try:
            cgroup = procfs.cgroup(process.pid)
        except OSError:
            continue  # exited meanwhile
        found[process.pid] = Proc(
            process.pid, process.ppid, f"{process.pid}@{process.starttime}", process.comm,
            process.state, process.cmdline.strip(), cgroup,
        )  # fmt: skip
    return found


def _is_vmm(p: Proc) -> bool:
    argv0 = os.path.basename(p.cmdline.split(" ", 1)[0]) if p.cmdline else p.comm
    return bool(VMM_COMMANDS.match(argv0) or VMM_COMMANDS.match(p.comm) or AGENT_MARK in p.cmdline)


def _describe(p: Proc) -> str:
    return f"pid {p.pid} ppid {p.ppid} [{p.state}] {p.cmdline[:200] or p.comm}"


def _processes(me: int) -> tuple[Category, dict[str, Proc]]:
    """The category (our descendants and VMM-like processes) and every process by key."""
    procs = _procs()
    mine = set(procfs.descendants(me, procs.values()))
    chosen = [p for p in procs.values() if p.pid in mine or _is_vmm(p)]
    return (
        Category("processes", {p.key: _describe(p) for p in chosen}),
        {p.key: p for p in procs.values()},
    )


def _run_json(argv: list[str]) -> tuple[object, str]:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"{argv[0]}: {exc}"
    if done.returncode != 0:
        return None, f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()[:200]}"
    try:
        return (json.loads(done.stdout) if done.stdout.strip() else []), ""
    except ValueError as exc:
        return None, f"{' '.join(argv)}: not JSON ({exc})"


def _links() -> Category:
    data, why = _run_json(["ip", "-j", "link"])
    if not isinstance(data, list):
        return Category("network links (host netns)", {}, why or "no list")
    items = {}
    for link in data:
        kind = (link.get("linkinfo") or {}).get("info_kind", link.get("link_type", "?"))
        items[f"{link['ifname']}#{link.get('ifindex')}"] = f"{link['ifname']} ({kind})"
    return Category("network links (host netns)", items)


def _netns() -> Category:
    items = {}
    try:
        done = subprocess.run(
            ["ip", "netns", "list"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Category("network namespaces", {}, f"ip netns list: {exc}")
    for line in done.stdout.splitlines():
        if line.strip():
            name = line.split()[0]
            items[name] = f"netns {name} (ip netns list)"
    run_netns = Path("/run/netns")
    if run_netns.is_dir():
        for entry in run_netns.iterdir():
            items.setdefault(entry.name, f"netns file {entry}")
    return Category("network namespaces", items)


def _mounts() -> Category:
    items = {}
    for who in ("self", "1"):
        try:
            text = Path(f"/proc/{who}/mountinfo").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            fields = line.split()
            sep = fields.index("-")
            point, fstype, source = fields[4], fields[sep + 1], fields[sep + 2]
            items[f"{who}:{fields[0]}:{point}"] = f"{point} ({fstype} from {source}; pid {who})"
    return Category("mounts (/proc/self and /proc/1 mountinfo)", items)


def _unix_sockets(scope: Scope) -> Category:
    items = {}
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 8 and scope.owns(fields[7]):
            items[f"{fields[6]}:{fields[7]}"] = f"{fields[7]} (inode {fields[6]})"
    return Category("unix sockets under the scope", items)


def _files(scope: Scope) -> Category:
    items: dict[str, str] = {}
    for root in scope.paths:
        if not root.is_dir():
            continue
        for here, dirs, files in os.walk(root):
            for name in dirs + files:
                path = os.path.join(here, name)
                items[path] = path
            if len(items) > MAX_FILES:
                return Category("files under the scope", items, f"more than {MAX_FILES} files")
    return Category("files and dirs under the scope", items)


def _fds() -> Category:
    items = {}
    for entry in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(entry)
        except OSError:
            continue  # the fd listing /proc/self/fd itself, closed by now
        items[f"{entry.name}->{target}"] = f"fd {entry.name} -> {target}"
    return Category("open fds of this process", items)


def _threads() -> Category:
    names = {t.native_id: t.name for t in threading.enumerate()}
    items = {}
    for entry in Path("/proc/self/task").iterdir():
        tid = int(entry.name)
        items[str(tid)] = f"thread {tid} {names.get(tid, '(native, no Python thread)')}"
    return Category("threads of this process", items)


def _loop_devices() -> Category:
    data, why = _run_json(["losetup", "-J"])
    if data == []:
        return Category("loop devices", {})
    if not isinstance(data, dict):
        return Category("loop devices", {}, why or "no list")
    items = {d["name"]: f"{d['name']} -> {d.get('back-file')}" for d in data["loopdevices"]}
    return Category("loop devices", items)


def _cgroups() -> Category:
    items = {}
    if not CGROUP_ROOT.is_dir():
        return Category("cgroups (remotecli-*)", {}, f"no {CGROUP_ROOT}")
    hierarchies = [CGROUP_ROOT, *(p for p in CGROUP_ROOT.iterdir() if p.is_dir())]
    for top in hierarchies:
        for found in top.glob("remotecli-*"):
            if not found.is_dir():
                continue
            if found.name == JAILER_PARENT:
                for child in found.iterdir():
                    if child.is_dir():
                        items[str(child)] = str(child)
            else:
                items[str(found)] = str(found)
    return Category("cgroups (remotecli-*, remotecli-fc/*)", items)


def _nspawn_propagate() -> Category:
    items = {}
    if NSPAWN_PROPAGATE.is_dir():
        items = {str(p): str(p) for p in NSPAWN_PROPAGATE.iterdir()}
    return Category("nspawn propagation dirs", items)


def _machines() -> Category:
    try:
        done = subprocess.run(
            ["machinectl", "list", "--no-legend", "--no-pager"],
            capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
    except OSError as exc:
        return Category("systemd machines", {}, f"machinectl: {exc}")
    if done.returncode != 0:
        return Category(
            "systemd machines", {}, "machinectl: " + " ".join(done.stderr.split())[:120]
        )
    lines = [ln.split()[0] for ln in done.stdout.splitlines() if ln.strip()]
    return Category("systemd machines", {m: m for m in lines})


@dataclass(frozen=True)
class HostState:
    categories: list[Category]
    #: Every process on the host by key (for the ancestry of new ones).
    procs: dict[str, Proc]


def snapshot(scope: Scope) -> HostState:
    processes, procs = _processes(os.getpid())
    categories = [
        processes, _threads(), _fds(), _files(scope), _unix_sockets(scope), _mounts(),
        _netns(), _links(), _cgroups(), _loop_devices(), _nspawn_propagate(), _machines(),
    ]  # fmt: skip
    return HostState(categories, procs)


# -- the diff -----------------------------------------------------------------------------


def _ours_process(key: str, before: HostState, after: HostState, scope: Scope) -> bool:
    """A new process is ours if it names the scope, or descends from this process without
    passing through a process that was already there (a database server's new worker is
    the server's business)."""
    p = after.procs[key]
    if scope.owns(p.cmdline) or scope.owns(p.cgroup):
        return True
    by_pid = {q.pid: q for q in after.procs.values()}
    me, pid = os.getpid(), p.ppid
    while pid != me and pid in by_pid:
        if by_pid[pid].key in before.procs:
            return False
        pid = by_pid[pid].ppid
    return pid == me


def _ours(category: str, key: str, text: str, scope: Scope, before: HostState,
          after: HostState) -> bool:  # fmt: skip
    if category == "processes":
        return _ours_process(key, before, after, scope)
    if category.startswith("threads"):
        return not any(name in text for name in POOL_THREADS)
    if category.startswith(("open fds", "files", "unix sockets")):
        return True
    if category.startswith("network links"):
        return scope.owns(text) or bool(VM_LINKS.match(text))
    return scope.owns(text)


def diff(before: HostState, after: HostState, scope: Scope) -> LeakReport:
    report = LeakReport()
    for old, new in zip(before.categories, after.categories, strict=True):
        unavailable = old.unavailable or new.unavailable
        leaked: list[str] = []
        not_ours: list[str] = []
        if not unavailable:
            for key in sorted(new.items.keys() - old.items.keys()):
                text = new.items[key]
                ours = _ours(new.name, key, text, scope, before, after)
                (leaked if ours else not_ours).append(text)
        report.rows.append(
            Row(new.name, len(old.items), len(new.items), leaked, not_ours, unavailable)
        )
    return report


# -- the context manager ------------------------------------------------------------------


class LeakWatch:
    """``with`` / ``async with``: snapshot on entry; on exit, diff (retrying up to ``settle``
    seconds) and raise ``AssertionError`` listing what is left. ``report`` holds the last diff."""

    def __init__(self, paths: Iterable[Path], markers: Iterable[str], settle: float) -> None:
        self.tag = f"lk{secrets.token_hex(3)}"
        self.scope = Scope(tuple(paths), (self.tag, *markers))
        self.settle = settle
        self.report = LeakReport()
        self._before: HostState | None = None
        self._count = 0

    def name(self, what: str) -> str:
        """A unique instance id that carries this watch's tag (so its resources are ours)."""
        self._count += 1
        return f"{self.tag}-{what}-{self._count}"

    def check(self) -> LeakReport:
        assert self._before is not None, "check() inside the with block only"
        self.report = diff(self._before, snapshot(self.scope), self.scope)
        return self.report

    def _conclude(self, raised: bool) -> None:
        if raised:  # the block's own error is the failure; what it left is evidence
            if self.report.leaks:
                print("after the error, " + self.report.render())
        elif self.report.leaks:
            raise AssertionError("resources left behind:\n" + self.report.render())
        else:
            print(self.report.render())

    def __enter__(self) -> LeakWatch:
        self._before = snapshot(self.scope)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        with contextlib.suppress(NotYet):  # _conclude reports what is left
            eventually(SETTLED, lambda: not self.check().leaks, self._settle(kind), interval=0.1)
        self._conclude(raised=kind is not None)

    async def __aenter__(self) -> LeakWatch:
        return self.__enter__()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # Polled on the loop: it lets the loop reap children and finish teardowns.
        with contextlib.suppress(NotYet):
            await eventually_async(
                SETTLED, lambda: not self.check().leaks, self._settle(kind), interval=0.1
            )
        self._conclude(raised=kind is not None)

    def _settle(self, kind: type[BaseException] | None) -> float:
        """How long teardowns may take to finish: none after an error (report at once)."""
        return self.settle if kind is None else 0


def no_leaks(*paths: Path, markers: Iterable[str] = (), settle: float = 10.0) -> LeakWatch:
    """Watch the host for what the block leaves behind; ``paths`` (state dirs, chroot bases)
    and ``markers`` say what is ours, as does every ``watch.name()``."""
    return LeakWatch(paths, markers, settle)


def held(watch: LeakWatch) -> Iterator[str]:
    """Each leaked item as "category: item" (for asserting on the checker itself)."""
    for category, items in watch.report.leaks.items():
        for item in items:
            yield f"{category}: {item}"
