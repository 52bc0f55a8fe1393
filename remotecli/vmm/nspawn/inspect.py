"""Ask systemd inside an instance about the agent unit: the evidence behind a hint.

Backend-neutral: it needs only an ``exec_in(argv)`` that runs a command in
the guest (nsenter for nspawn; later the agent's exec or a serial shell for
VMs). Every query is allowed to fail: a half-booted guest answers some and
not others, and what it could not answer is evidence too.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Sequence

from remotecli.errors import RemoteCliError
from remotecli.proc import Completed
from remotecli.vmm.base import UnitState

Exec = Callable[..., Awaitable[Completed]]

PROPERTIES = (
    "LoadState", "LoadError", "UnitFileState", "ActiveState", "SubState", "Result",
    "ExecMainCode", "ExecMainStatus", "NRestarts", "MainPID", "After", "Wants",
    "FragmentPath", "DropInPaths", "ExecStart",
)  # fmt: skip
# ss -Hltnp: "LISTEN 0 5 0.0.0.0:8080 0.0.0.0:* users:(("python3",pid=45,fd=3))"
_SS_LINE = re.compile(r"^\S+\s+\d+\s+\d+\s+(?P<local>\S+)\s+\S+\s*(?P<users>.*)$")
_SS_USER = re.compile(r'\("(?P<name>[^"]+)",pid=(?P<pid>\d+)')


async def _try(exec_in: Exec, argv: Sequence[str]) -> str:
    try:
        done = await exec_in(argv, timeout=5.0, check=False)
    except RemoteCliError as exc:
        return f"({' '.join(argv)}: {exc.message})"
    return (done.stdout + done.stderr).rstrip()


def parse_show(text: str) -> dict[str, str]:
    props: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.isidentifier():
            props[key] = value
    return props


async def _listeners(exec_in: Exec) -> str:
    """TCP listeners with the process and systemd unit holding each (who took port 8080?)."""
    raw = await _try(exec_in, ["ss", "-Hltnp"])
    lines = []
    for line in raw.splitlines():
        match = _SS_LINE.match(line.strip())
        if not match:
            lines.append(line.strip())
            continue
        owners = []
        for user in _SS_USER.finditer(match["users"]):
            cgroup = await _try(exec_in, ["cat", f"/proc/{user['pid']}/cgroup"])
            # One line per hierarchy the *kernel* has (v1 ones too); "0::" is v2's.
            v2 = [ln for ln in cgroup.splitlines() if ln.startswith("0::")]
            unit = v2[0].rsplit("/", 1)[-1] if v2 else "?"
            owners.append(f"{user['name']} pid={user['pid']} unit={unit}")
        lines.append(f"{match['local']} {', '.join(owners) or '(owner unknown)'}")
    return "\n".join(lines)


async def gather_unit_state(exec_in: Exec, unit: str) -> UnitState:
    show, jobs, status, system, listeners = await asyncio.gather(
        _try(exec_in, ["systemctl", "show", unit, "-p", ",".join(PROPERTIES)]),
        _try(exec_in, ["systemctl", "list-jobs", "--after", "--no-pager", "--full"]),
        _try(exec_in, ["systemctl", "status", unit, "--no-pager", "--full", "-n", "20"]),
        _try(exec_in, ["systemctl", "is-system-running"]),
        _listeners(exec_in),
    )
    properties = parse_show(show)
    if not properties:
        properties = {"error": show or "systemctl show printed nothing"}
    return UnitState(
        unit=unit, properties=properties, jobs=jobs, status=status,
        listeners=listeners, system_state=system,
    )  # fmt: skip
