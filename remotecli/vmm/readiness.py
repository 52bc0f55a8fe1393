"""The readiness contract: follow the console and the agent, time each phase, explain a miss.

Every backend hands ``wait_ready`` the same things: the console file (captured
from the first byte), the agent's Unix socket, the launcher's exit code and a
way to ask systemd about the agent unit. The tracker reads the console as it
grows, records the moment each phase's marker appears, probes ``GET /health``
once the agent says it listens, and enforces each phase's deadline (counted
from the previous phase). On a miss it raises ``NotReady`` with the evidence:
the last phase reached, the seconds spent in each, the console tail (ANSI
stripped), the agent unit's state and a hint from ``diagnose``.

Times are when the tracker *saw* the marker, polling every 20 ms; call
``wait_ready`` right after ``start`` or the first phases look late.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from remotecli.agent.wire import HEALTH
from remotecli.errors import NotReady
from remotecli.images import layout
from remotecli.vmm import diagnose
from remotecli.vmm.base import PHASES, InstanceSpec, Phase, Readiness, UnitState
from remotecli.vmm.endpoint import AgentEndpoint

#: Console markers per phase; a backend adds its own VMM_STARTED marker.
DEFAULT_MARKERS: Mapping[Phase, tuple[str, ...]] = {
    Phase.KERNEL_BOOTED: layout.KERNEL_MARKERS,
    Phase.INIT_STARTED: layout.INIT_MARKERS,
    Phase.AGENT_LISTENING: (layout.AGENT_LISTENING_MARKER,),
}
#: Bounds of the evidence: enough to read a traceback, small enough for an API body.
TAIL_LINES = 60
TAIL_CHARS = 6000
#: Lines of console kept in memory for the diagnosis (a clean boot is ~150).
KEPT_LINES = 20_000
POLL_SECONDS = 0.02
#: While waiting for the listening marker, /health is also tried this often:
#: an agent whose stdout does not reach the console is still found ready.
EARLY_PROBE_SECONDS = 0.25
#: How long a dead agent unit may stay dead before we stop waiting (systemd's
#: default RestartSec is 100 ms, so a unit that restarts shows it well within).
CRASH_GRACE_SECONDS = 1.0

# CSI (colours, cursor), OSC (titles, ended by BEL or ST) and two-byte escapes.
_ANSI = re.compile(r"\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def strip_ansi(text: str) -> str:
    """Console bytes as a human reads them: no escapes, no carriage returns."""
    return _CONTROL.sub("", _ANSI.sub("", text))


def console_tail(path: Path, max_chars: int = TAIL_CHARS, max_lines: int = TAIL_LINES) -> str:
    """The last lines of a console file, ANSI stripped and bounded."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - max_chars * 4))
            data = fh.read()
    except FileNotFoundError:
        return ""
    lines = [strip_ansi(line) for line in data.decode(errors="replace").splitlines()]
    text = "\n".join(lines[-max_lines:])
    return text[-max_chars:]


class ConsoleFollower:
    """Reads a growing console file from the first byte, one complete line at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.lines: deque[str] = deque(maxlen=KEPT_LINES)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._partial = ""

    def poll(self) -> list[str]:
        """New complete lines since the last call (ANSI stripped)."""
        try:
            with self.path.open("rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        text = self._partial + self._decoder.decode(data)
        *complete, self._partial = text.split("\n")
        new = [strip_ansi(line) for line in complete]
        self.lines.extend(new)
        return new

    def text(self) -> str:
        """Everything seen so far, including an unfinished last line."""
        return "\n".join([*self.lines, strip_ansi(self._partial)])


@dataclass(frozen=True)
class HealthProbe:
    ok: bool
    detail: str
    body: Mapping[str, Any] | None = None


def seed_health_ok(body: Any) -> bool:
    """The seed's contract: ``{"status": "ok", "timestamp": ..., "activeSessions": N}``."""
    return (
        isinstance(body, dict)
        and body.get("status") == "ok"
        and isinstance(body.get("timestamp"), str)
        and isinstance(body.get("activeSessions"), int)
    )


async def probe_health(
    endpoint: AgentEndpoint | Path, timeout: float = 1.0, *, token: str | None = None
) -> HealthProbe:
    """One ``GET /health`` to the agent (a raw request, ``Connection: close``).

    ``token``: send it as the bearer (the agent's /health needs none; an
    identity check after a restore does).
    """
    socket = AgentEndpoint.unix(endpoint) if isinstance(endpoint, Path) else endpoint
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await socket.open_connection()
            try:
                # The route is the wire's; the request is raw so that it probes the socket alone.
                line = f"{HEALTH.method} {HEALTH.path} HTTP/1.1"
                request = f"{line}\r\nHost: agent\r\n{auth}Connection: close\r\n\r\n"
                writer.write(request.encode())
                await writer.drain()
                raw = await reader.read()
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except TimeoutError:
        return HealthProbe(False, f"GET /health over {socket} timed out after {timeout} s")
    except OSError as exc:
        return HealthProbe(False, f"cannot connect to {socket}: {exc.strerror or exc}")
    head, _, payload = raw.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].decode(errors="replace")
    parts = status_line.split()
    if len(parts) < 2 or parts[1] != "200":
        return HealthProbe(False, f"GET /health answered {status_line!r}")
    try:
        body = json.loads(payload)
    except ValueError:
        return HealthProbe(
            False, f"GET /health answered 200 with a non-JSON body: {payload[:200]!r}"
        )
    if not seed_health_ok(body):
        return HealthProbe(False, f"GET /health answered 200 but not the seed's JSON: {body}")
    return HealthProbe(True, "ok", body)


class Watched(Protocol):
    """What the tracker needs from an instance (every backend's instance has it)."""

    spec: InstanceSpec
    console_path: Path
    agent_endpoint: AgentEndpoint

    def exit_code(self) -> int | None:
        """The launcher's exit code once it has exited, else None."""
        ...

    async def unit_state(self) -> UnitState | None: ...


HealthProber = Callable[[AgentEndpoint], Awaitable[HealthProbe]]


async def wait_ready(
    target: Watched,
    *,
    backend: str,
    started_at: float,
    markers: Mapping[Phase, tuple[str, ...]],
    skipped: Mapping[Phase, str],
    readiness: Readiness | None = None,
    prober: HealthProber = probe_health,
) -> Readiness:
    """Follow ``target`` until AGENT_READY; raise ``NotReady`` with the evidence on a miss.

    ``started_at`` is ``time.monotonic()`` when the launcher was spawned. A
    phase with no marker in ``markers`` (and not skipped) is reached at once:
    the fake backend's VMM_STARTED is the spawn itself.
    """
    readiness = readiness or Readiness()
    readiness.skipped.update(skipped)
    todo = [p for p in PHASES if p not in readiness.skipped and p not in readiness.reached]
    follower = ConsoleFollower(target.console_path)
    deadlines = target.spec.deadlines
    early_verdict = _EarlyVerdict(target, layout.AGENT_UNIT)
    last_probe = HealthProbe(False, "not tried yet")
    next_probe = 0.0

    def now() -> float:
        return time.monotonic() - started_at

    while todo:
        phase = todo[0]
        new_lines = follower.poll()
        for line in new_lines:
            for candidate in todo:
                if candidate not in markers or candidate in readiness.reached:
                    continue
                if any(marker in line for marker in markers[candidate]):
                    _reach(readiness, todo, candidate, now())
            early_verdict.feed(line)
        if phase not in markers and phase is not Phase.AGENT_READY:
            _reach(readiness, todo, phase, now())
        # Probe /health when it matters: for AGENT_READY, or as a fallback
        # for the listening marker (an agent not logging to the console).
        if phase is Phase.AGENT_READY or (
            phase is Phase.AGENT_LISTENING and time.monotonic() >= next_probe
        ):
            next_probe = time.monotonic() + EARLY_PROBE_SECONDS
            last_probe = await prober(target.agent_endpoint)
            if last_probe.ok:
                _reach(readiness, todo, Phase.AGENT_READY, now())
        while todo and todo[0] in readiness.reached:
            todo.pop(0)
        if not todo:
            break
        phase = todo[0]
        since = max(readiness.reached.values(), default=0.0)
        waited = now() - since
        code = target.exit_code()
        early = await early_verdict.verdict()
        if code is not None:
            follower.poll()  # the launcher's last words
            early = f"the {backend} process exited with code {code}"
        if early is not None or waited > deadlines[phase]:
            raise await _not_ready(
                target, backend, readiness, phase, waited if early else deadlines[phase],
                follower, last_probe, code, early,
            )  # fmt: skip
        await asyncio.sleep(POLL_SECONDS)
    return readiness


def _reach(readiness: Readiness, todo: list[Phase], phase: Phase, at: float) -> None:
    """Record ``phase`` and any earlier phase still open at the same moment.

    A later phase implies the earlier ones (an agent that answers /health is
    listening; a booted systemd had a container manager), even when their
    marker never reached the console (an agent not logging to it, nspawn
    run with --quiet).
    """
    for earlier in todo[: todo.index(phase) + 1] if phase in todo else ():
        readiness.reached.setdefault(earlier, round(at, 3))


class _EarlyVerdict:
    """Stop waiting before the deadline when nothing more can happen.

    - systemd gave up on the agent unit ("Failed to start", after its start limit);
    - the unit failed and systemd says it will not restart it (asked once per
      failure: with ``Restart=on-failure`` its SubState is ``auto-restart``);
    - the boot finished ("Startup finished") without ever starting the unit.
    The last two wait CRASH_GRACE_SECONDS for a late restart / start line.
    """

    def __init__(self, target: Watched, unit: str) -> None:
        self.target = target
        self.unit = unit
        self.started = False
        self.gave_up = False
        self.failed_at: float | None = None
        self.asked = False
        self.idle_since: float | None = None

    def feed(self, line: str) -> None:
        unit = self.unit
        if f"Started {unit}" in line or f"Starting {unit}" in line:
            self.started, self.failed_at, self.idle_since = True, None, None
        elif f"Failed to start {unit}" in line:
            self.gave_up = True
        elif line.startswith(f"{unit}: Failed with result"):
            self.failed_at, self.asked = time.monotonic(), False
        elif line.startswith(f"{unit}: Scheduled restart job"):
            self.failed_at = None
        elif line.startswith("Startup finished") and not self.started:
            self.idle_since = time.monotonic()

    async def verdict(self) -> str | None:
        now = time.monotonic()
        if self.gave_up:
            return f"systemd gave up starting {self.unit}"
        if self.failed_at is not None and not self.asked:
            self.asked = True
            state = await self._ask()
            if state is not None and state.properties.get("SubState") == "auto-restart":
                self.failed_at = None  # systemd restarts it: keep waiting
            elif state is not None and state.properties.get("ActiveState") == "failed":
                return f"{self.unit} failed and systemd will not restart it"
        if self.failed_at is not None and now - self.failed_at > CRASH_GRACE_SECONDS:
            return f"{self.unit} failed and was not restarted"
        if self.idle_since is not None and now - self.idle_since > CRASH_GRACE_SECONDS:
            return f"the boot finished without starting {self.unit}"
        return None

    async def _ask(self) -> UnitState | None:
        try:
            async with asyncio.timeout(5):
                return await self.target.unit_state()
        except Exception:  # only a shortcut: the deadline still applies
            return None


async def _not_ready(
    target: Watched,
    backend: str,
    readiness: Readiness,
    waiting_for: Phase,
    waited: float,
    follower: ConsoleFollower,
    probe: HealthProbe,
    exit_code: int | None,
    early: str | None,
) -> NotReady:
    unit: UnitState | None = None
    unit_error = ""
    try:
        async with asyncio.timeout(10):
            unit = await target.unit_state()
    except Exception as exc:  # evidence gathering must never hide the real failure
        unit_error = f"(could not ask systemd: {exc})"
    evidence = diagnose.Evidence(
        console=follower.text(),
        unit=unit,
        waiting_for=waiting_for,
        last_phase=readiness.last,
        backend=backend,
        exit_code=exit_code,
        health_error=None if probe.ok or probe.detail == "not tried yet" else probe.detail,
        console_path=target.console_path,
    )
    found = diagnose.diagnose(evidence)
    hint = found.hint if early is None else f"{found.hint} (Stopped waiting: {early}.)"
    return NotReady(
        instance_id=target.spec.instance_id,
        backend=backend,
        last_phase=readiness.last.value if readiness.last else None,
        waiting_for=waiting_for.value,
        deadline=round(waited, 3),
        phases=readiness.durations(),
        skipped={p.value: r for p, r in readiness.skipped.items()},
        console_tail=console_tail(target.console_path),
        unit_state=unit.render() if unit is not None else unit_error or None,
        hint=hint,
        cause=found.cause,
    )
