"""Console text (+ the agent unit's state) → the cause of a missed readiness deadline.

Pure functions: no IO, so each rule is tested on consoles captured from real
boots of faulty images (tests/vmm/fixtures/boots/). Rules run from the most
specific to the most general; the first that matches names the cause.

The one the seed got wrong: a unit ordered ``After=network-online.target``
is *not* held back by that alone — with no wait-online service enabled the
target is reached at once (measured: Debian trixie, systemd 257). It blocks
only while a wait-online service runs. ``network_online_blocked`` is named
only when such a running job really holds the agent's start job; other
hints say when the target was reached, so nobody chases it again.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from remotecli.images import layout
from remotecli.vmm.base import Phase, UnitState

UNIT = layout.AGENT_UNIT
NETWORK_ONLINE = "network-online.target"
TRACEBACK_LINES = 25
# "python3[52]: message" — how journald forwards a unit's output to the console.
_PREFIX = re.compile(r"^[\w.@-]+\[\d+\]: ")
_INIT_MISSING = re.compile(
    r"execv\(.*\) failed|Failed to execute init|No working init found|Requested init \S+ failed"
)
_JOB = re.compile(r"^(?P<id>\d+)\s+(?P<unit>\S+)\s+(?P<type>\S+)\s+(?P<state>\S+)")
_BLOCKING = re.compile(r"blocking job (?P<id>\d+) \((?P<unit>[^/]+)/")
_BIND = re.compile(r"\('(?P<host>[^']*)', (?P<port>\d+)\)")
_EXIT = re.compile(rf"{re.escape(UNIT)}: Main process exited, code=\w+, status=(?P<status>\S+)")


@dataclass(frozen=True)
class Evidence:
    #: The whole console so far, ANSI stripped.
    console: str
    unit: UnitState | None
    waiting_for: Phase
    last_phase: Phase | None
    backend: str = "nspawn"
    #: The launcher's exit code, when it exited.
    exit_code: int | None = None
    #: Why the last ``GET /health`` failed, when one was tried.
    health_error: str | None = None
    console_path: Path | None = None


@dataclass(frozen=True)
class Diagnosis:
    #: A stable name for the cause (tests, metrics, the dashboard's icon).
    cause: str
    hint: str


@dataclass(frozen=True)
class Job:
    id: int
    unit: str
    state: str
    blocking: tuple[int, ...]


# -- reading the evidence ------------------------------------------------------------


def lines(console: str) -> list[str]:
    return [ln.rstrip() for ln in console.splitlines()]


def unprefixed(line: str) -> str:
    return _PREFIX.sub("", line, count=1)


def traceback(console: str) -> list[str]:
    """The last Python traceback on the console (without journald's prefixes)."""
    all_lines = lines(console)
    starts = [
        i for i, ln in enumerate(all_lines) if ln.endswith("Traceback (most recent call last):")
    ]
    if not starts:
        return []
    first = all_lines[starts[-1]]
    prefix = first[: len(first) - len("Traceback (most recent call last):")]
    out = [unprefixed(first)]
    for line in all_lines[starts[-1] + 1 :]:
        if not line.startswith(prefix):
            continue  # another process's line interleaved
        text = line[len(prefix) :]
        out.append(text)
        if text and not text[0].isspace():
            break  # "SomeError: message" ends the traceback
    return out


def agent_events(console: str) -> list[dict[str, Any]]:
    """The agent's JSON log records that reached the console."""
    events = []
    for line in lines(console):
        text = unprefixed(line)
        if text.startswith("{") and '"event": "agent.' in text:
            try:
                record = json.loads(text)
            except ValueError:
                continue
            if isinstance(record, dict):
                events.append(record)
    return events


def parse_jobs(text: str) -> list[Job]:
    """``systemctl list-jobs --after``: each job and the jobs it is blocking."""
    jobs: list[Job] = []
    for line in text.splitlines():
        if match := _JOB.match(line.strip()):
            jobs.append(Job(int(match["id"]), match["unit"], match["state"], ()))
        elif (match := _BLOCKING.search(line)) and jobs:
            last = jobs[-1]
            jobs[-1] = Job(last.id, last.unit, last.state, (*last.blocking, int(match["id"])))
    return jobs


def blocking_chain(jobs: list[Job], unit: str) -> list[Job]:
    """The jobs that hold ``unit``'s start job, nearest first, ending at a running one."""
    by_unit = {j.unit: j for j in jobs}
    chain: list[Job] = []
    current = by_unit.get(unit)
    while current is not None and current.state == "waiting":
        blockers = [j for j in jobs if current.id in j.blocking and j not in chain]
        if not blockers:
            break
        # Prefer a running blocker; else follow a waiting one further down.
        current = next((j for j in blockers if j.state == "running"), blockers[0])
        chain.append(current)
    return chain


def _unit_files(unit: UnitState | None) -> str:
    if unit is None:
        return ""
    files = [
        unit.properties.get("FragmentPath", ""),
        *unit.properties.get("DropInPaths", "").split(),
    ]
    return ", ".join(f for f in files if f)


def _network_note(ev: Evidence) -> str:
    """Tell the seed's suspect apart: ordered after network-online, but the target was reached."""
    after = ev.unit.properties.get("After", "") if ev.unit else ""
    if f"Reached target {NETWORK_ONLINE}" in ev.console:
        ordered = (
            f" {UNIT} is ordered After={NETWORK_ONLINE}, but" if NETWORK_ONLINE in after else ""
        )
        return f" (Not network-online.target:{ordered} that target was reached during boot.)"
    return ""


# -- the rules ----------------------------------------------------------------------


def _no_init(ev: Evidence) -> Diagnosis | None:
    if ev.last_phase not in (None, Phase.VMM_STARTED, Phase.KERNEL_BOOTED):
        return None
    found = [ln for ln in lines(ev.console) if _INIT_MISSING.search(ln)]
    if not found:
        return None
    return Diagnosis(
        "no_init",
        f"The image has no init: {ev.backend} says {found[-1].strip()!r}. systemd must be at "
        "/sbin/init (→ /usr/lib/systemd/systemd); the rootfs is incomplete or a layer deletes "
        "it. Rebuild the image (remotecli image build) and check the layers.",
    )


def _vm_init_failed(ev: Evidence) -> Diagnosis | None:
    """A VM's initramfs (images/initramfs.py) said why it gave up, then powered off."""
    failed = [ln.strip() for ln in lines(ev.console) if "remotecli-init: FAILED:" in ln]
    if not failed:
        return None
    return Diagnosis(
        "vm_init_failed",
        f"The VM's initramfs gave up before systemd: {failed[-1]!r}. It finds the root disk by "
        "its ext4 label and the config disk by its first bytes; check the VM artifacts "
        "(remotecli image vm) and the drives the backend attached.",
    )


def _host_limit(ev: Evidence) -> Diagnosis | None:
    """PID 1 ran out of a per-user host resource: containers share the host's root user.

    Seen with ~40 nspawn containers at once: each one's systemd takes several of
    the host user's inotify instances (``fs.inotify.max_user_instances``, 128 by
    default), and the next PID 1 cannot allocate its manager and exits.
    """
    found = [ln.strip() for ln in lines(ev.console) if "Too many open files" in ln]
    if not found:
        return None
    limit = (
        "the host user's inotify instances: raise fs.inotify.max_user_instances (128 by "
        "default; e.g. sysctl -w fs.inotify.max_user_instances=8192, and max_user_watches)"
        if "inotify" in found[0]
        else "open files: raise the launcher's RLIMIT_NOFILE (LimitNOFILE= of the controller)"
    )
    return Diagnosis(
        "host_limit",
        f"The instance's init ran out of a host resource: {found[0]!r}. Every instance on this "
        f"host shares {limit}, or run fewer VMs at once.",
    )


def _vmm_exited(ev: Evidence) -> Diagnosis | None:
    if ev.exit_code is None or ev.last_phase not in (None, Phase.VMM_STARTED, Phase.KERNEL_BOOTED):
        return None
    noise = ("Spawning container", "Press ^]", "Some capabilities", "Attempted to remove")
    said = [ln.strip() for ln in lines(ev.console) if ln.strip() and not ln.startswith(noise)]
    return Diagnosis(
        "vmm_exited",
        f"{ev.backend} exited with code {ev.exit_code} before init started. It said: "
        + (" | ".join(said[-5:]) or "nothing"),
    )


def _unit_unloadable(ev: Evidence) -> Diagnosis | None:
    state = ev.unit.properties.get("LoadState", "") if ev.unit else ""
    keys = ("Refusing", "ignoring", "bad unit file", "not found")
    complaints = [
        ln.strip() for ln in lines(ev.console) if UNIT in ln and any(k in ln for k in keys)
    ]  # fmt: skip
    if state in ("not-found", "masked"):
        return Diagnosis(
            f"unit_{state.replace('-', '_')}",
            f"{UNIT} is {state} in the image (LoadState={state}): the image build did not "
            f"install it at {layout.AGENT_UNIT_PATH}, or something masks it. Rebuild the image.",
        )
    if state not in ("bad-setting", "error") and not any("Refusing" in c for c in complaints):
        return None
    missing = any("has no ExecStart=" in c for c in complaints)
    parse_errors = [c for c in complaints if re.search(rf"{re.escape(UNIT)}:\d+:", c)]
    if parse_errors:
        cause, what = "unit_broken", "its unit file has errors"
        what += " and so no ExecStart=" if missing else ""
    elif missing:
        cause, what = "unit_exec_start_missing", "it has no ExecStart="
    else:
        cause, what = "unit_broken", "its unit file is broken"
    return Diagnosis(
        cause,
        f"systemd refuses to start {UNIT}: {what} (LoadState={state or '?'}; files: "
        f"{_unit_files(ev.unit) or layout.AGENT_UNIT_PATH}). systemd said: "
        + " | ".join(complaints[-4:] or ["(nothing on the console)"])
        + " Fix the unit file or the drop-in and rebuild the image.",
    )


def _config_error(ev: Evidence) -> Diagnosis | None:
    errors = [e for e in agent_events(ev.console) if e.get("event") == "agent.config_error"]
    if not errors:
        return None
    message = str(errors[-1].get("message", ""))
    if "token" in message:
        return Diagnosis(
            "token_missing",
            f"The agent cannot start without its token: {message}. The backend writes the "
            f"token to the instance's run dir, which the guest sees at {layout.RUN_DIR}; check "
            f"that it is there and that nothing in the unit hides {layout.RUN_DIR} "
            f"(TemporaryFileSystem=, a drop-in; files: {_unit_files(ev.unit) or '?'}) and "
            f"that ExecStart passes --token-file {layout.TOKEN_FILE}.",
        )
    return Diagnosis("agent_config_error", f"The agent refused its configuration: {message}.")


def _port_in_use(ev: Evidence) -> Diagnosis | None:
    failures = [
        str(e.get("message", "")) for e in agent_events(ev.console)
        if e.get("event") == "agent.listen_failed"
    ]  # fmt: skip
    failures += [unprefixed(ln) for ln in lines(ev.console) if "cannot listen" in ln]
    hit = next((f for f in reversed(failures) if "address already in use" in f.lower()), None)
    if hit is None:
        return None
    bind = _BIND.search(hit)
    port = bind["port"] if bind else str(layout.AGENT_PORT)
    holders = [
        ln.split(" ", 1)[1] for ln in (ev.unit.listeners if ev.unit else "").splitlines()
        if ln.split(" ", 1)[0].endswith(f":{port}") and " " in ln
    ]  # fmt: skip
    who = f"by {'; '.join(holders)}" if holders else "by another process (see `ss -ltnp` inside)"
    return Diagnosis(
        "port_in_use",
        f"Port {port} is already taken inside the instance {who}, so the agent cannot listen "
        f"(Address already in use) and exits. Stop or reconfigure that service, or move the "
        f"agent's TCP listener (--tcp in REMOTECLI_AGENT_ARGS).",
    )


def _crashed(ev: Evidence) -> Diagnosis | None:
    tb = traceback(ev.console)
    if not tb:
        return None
    shown = tb if len(tb) <= TRACEBACK_LINES else [tb[0], "  ...", *tb[-(TRACEBACK_LINES - 2) :]]
    return Diagnosis(
        "agent_crashed",
        f"The agent crashed at start: {tb[-1].strip()}.{_network_note(ev)}\n" + "\n".join(shown),
    )


def _exited(ev: Evidence) -> Diagnosis | None:
    exits = [m["status"] for ln in lines(ev.console) if (m := _EXIT.search(ln))]
    props = ev.unit.properties if ev.unit else {}
    if not exits and props.get("ActiveState") != "failed":
        return None
    status = exits[-1] if exits else props.get("ExecMainStatus", "?")
    said = [unprefixed(ln) for ln in lines(ev.console) if _PREFIX.match(ln)][-5:]
    return Diagnosis(
        "agent_exited",
        f"The agent exited (status {status}) before it listened, without a traceback. Its last "
        f"output: {' | '.join(said) or '(none on the console)'}.{_network_note(ev)}",
    )


def _start_job_blocked(ev: Evidence) -> Diagnosis | None:
    chain = blocking_chain(parse_jobs(ev.unit.jobs), UNIT) if ev.unit else []
    if chain:
        running = chain[-1]
        path = " → ".join(j.unit for j in chain)
        if any(j.unit == NETWORK_ONLINE for j in chain):
            return Diagnosis("network_online_blocked", _network_hint(running.unit, path, ev))
        return Diagnosis(
            "start_job_blocked",
            f"{UNIT}'s start job is waiting for {path}: {running.unit} is still "
            f"{running.state}. Check why it does not finish, or drop the agent's ordering on it.",
        )
    # Console only (no unit state): a wait-online service started and never finished.
    if ev.unit is not None or f"Reached target {NETWORK_ONLINE}" in ev.console:
        return None
    started = re.findall(r"Starting (\S*wait-online\S*?)(?:\.\.\.| - )", ev.console)
    done = re.compile(r"(?:Finished|Started|Failed to start) (\S+?)\.?$", re.M)
    finished = set(done.findall(ev.console))
    pending = [s for s in started if s not in finished]
    if pending and f"Started {UNIT}" not in ev.console:
        return Diagnosis("network_online_blocked", _network_hint(pending[-1], "", ev))
    return None


def _network_hint(service: str, path: str, ev: Evidence) -> str:
    files = _unit_files(ev.unit)
    where = f" in {files}" if files else ""
    chain = f" The start job chain: {UNIT} → {path}." if path else ""
    return (
        f"{UNIT} waits for {NETWORK_ONLINE} (After=/Wants={where}) and "
        f"{service} holds that target: it is still running, and the target is reached only "
        "when it finishes — a wait-online service waits until a network link is configured, "
        f"up to its timeout (systemd-networkd-wait-online: 2 min).{chain} Order the agent "
        f"After=network.target only, or disable {service}. (After={NETWORK_ONLINE} alone is "
        "harmless: with no wait-online service the target is reached at once.)"
    )


def _not_enabled(ev: Evidence) -> Diagnosis | None:
    props = ev.unit.properties if ev.unit else {}
    booted = "Startup finished" in ev.console or "Reached target multi-user" in ev.console
    if ev.unit is not None and props:
        disabled = props.get("UnitFileState") not in ("enabled", "enabled-runtime", "")
        queued = any(j.unit == UNIT for j in parse_jobs(ev.unit.jobs))
        if not (disabled and props.get("ActiveState") == "inactive" and not queued):
            return None
        state = f"UnitFileState={props.get('UnitFileState')}"
    elif booted and not re.search(rf"(Started|Starting|Failed to start) {UNIT}", ev.console):
        state = "the boot finished and the console never mentions it"
    else:
        return None
    return Diagnosis(
        "unit_not_enabled",
        f"{UNIT} is not enabled ({state}), so the boot finished without starting it. The image "
        f"must enable it (a symlink in multi-user.target.wants/, as `systemctl enable` makes).",
    )


def _silent(ev: Evidence) -> Diagnosis | None:
    props = ev.unit.properties if ev.unit else {}
    if ev.waiting_for is not Phase.AGENT_LISTENING or props.get("SubState") != "running":
        return None
    argv = re.search(r"argv\[\]=([^;]*)", props.get("ExecStart", ""))
    return Diagnosis(
        "agent_silent",
        f"{UNIT} runs (Main PID {props.get('MainPID', '?')}) but never said it listens: the "
        "process hangs before binding, runs something else, or its output does not reach the "
        f"console (the unit needs StandardOutput=journal+console). ExecStart: "
        f"{argv[1].strip() if argv else '?'}.{_network_note(ev)}",
    )


def _unhealthy(ev: Evidence) -> Diagnosis | None:
    if ev.waiting_for is not Phase.AGENT_READY:
        return None
    listening = [e for e in agent_events(ev.console) if e.get("event") == "agent.listening"]
    listeners = listening[-1].get("listeners", []) if listening else []
    wanted = f"unix:{layout.AGENT_SOCKET}"
    if listening and wanted not in listeners:
        return Diagnosis(
            "agent_socket_missing",
            f"The agent listens on {listeners} but not on {layout.AGENT_SOCKET}, the socket the "
            f"host reaches: ExecStart needs --unix {layout.AGENT_SOCKET}.",
        )
    return Diagnosis(
        "agent_unhealthy",
        f"The agent said it listens but GET /health did not answer the seed's JSON: "
        f"{ev.health_error or 'no answer'}. Is {layout.RUN_DIR} bound to the instance's run dir?",
    )


RULES: tuple[Callable[[Evidence], Diagnosis | None], ...] = (
    _vm_init_failed, _no_init, _host_limit, _unit_unloadable, _config_error, _port_in_use, _crashed,
    _vmm_exited, _exited, _start_job_blocked, _not_enabled, _silent, _unhealthy,
)  # fmt: skip


def diagnose(ev: Evidence) -> Diagnosis:
    for rule in RULES:
        if (found := rule(ev)) is not None:
            return found
    last_line = next((ln.strip() for ln in reversed(lines(ev.console)) if ln.strip()), "")
    where = f" Full console: {ev.console_path}." if ev.console_path else ""
    return Diagnosis(
        "unknown",
        f"No known cause matched. Reached {ev.last_phase.value if ev.last_phase else 'nothing'}, "
        f"waiting for {ev.waiting_for.value}; the console last said {last_line!r}."
        f"{_network_note(ev)}{where}",
    )
