"""Each known cause is named from the console (+ unit state) of a REAL boot of a faulty image.

The fixtures in fixtures/boots/ were captured with the nspawn backend from
the golden image plus the layers in tests/vmm/layers.py (``<name>.console``
ANSI-stripped as the tracker sees it; ``<name>.unit.json`` what systemd
said right after the deadline). ``test_nspawn_faults.py`` reproduces them
live; these tests pin the rules down without booting anything.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from remotecli.vmm.base import Phase, UnitState
from remotecli.vmm.diagnose import (
    Evidence,
    blocking_chain,
    diagnose,
    parse_jobs,
    traceback,
)

BOOTS = Path(__file__).parent / "fixtures" / "boots"
INIT, LISTENING = Phase.INIT_STARTED, Phase.AGENT_LISTENING


def console(name: str) -> str:
    return (BOOTS / f"{name}.console").read_text()


def unit(name: str) -> UnitState | None:
    data = json.loads((BOOTS / f"{name}.unit.json").read_text())
    return None if data is None else UnitState(**data)


@dataclass(frozen=True)
class Case:
    boot: str
    cause: str
    says: tuple[str, ...]
    with_unit: bool = True
    last: Phase = INIT
    waiting: Phase = LISTENING
    exit_code: int | None = None

    def evidence(self) -> Evidence:
        return Evidence(
            console=console(self.boot),
            unit=unit(self.boot) if self.with_unit else None,
            waiting_for=self.waiting,
            last_phase=self.last,
            exit_code=self.exit_code,
            console_path=Path(f"/run/remotecli/instances/x/{self.boot}.log"),
        )


CASES = [
    Case("wait_online_fake", "network_online_blocked",
         ("slow-wait-online.service holds that target", "still running",
          "remotecli-agent.service → network-online.target → slow-wait-online.service",
          "online.conf", "After=network.target only")),
    Case("networkd_wait_online", "network_online_blocked",
         ("systemd-networkd-wait-online.service holds that target",)),
    Case("networkd_wait_online", "network_online_blocked",
         ("systemd-networkd-wait-online.service holds that target",), with_unit=False),
    Case("syntax_error", "agent_crashed",
         ("The agent crashed at start: SyntaxError: invalid syntax",
          '  File "/opt/remotecli/remotecli/agent/app.py", line 3', "    def routes(:")),
    Case("syntax_error", "agent_crashed", ("SyntaxError: invalid syntax",), with_unit=False),
    Case("crash_online_ordered", "agent_crashed",
         ("Not network-online.target: remotecli-agent.service is ordered "
          "After=network-online.target, but that target was reached during boot",)),
    Case("crash_online_ordered", "agent_crashed",
         ("Not network-online.target: that target was reached during boot",), with_unit=False),
    Case("not_enabled", "unit_not_enabled", ("UnitFileState=disabled", "multi-user.target.wants")),
    Case("not_enabled", "unit_not_enabled", ("the console never mentions it",), with_unit=False),
    Case("no_exec_start", "unit_exec_start_missing",
         ("it has no ExecStart=", "LoadState=bad-setting", "no-exec.conf",
          "Service has no ExecStart=, ExecStop=, or SuccessAction=. Refusing.")),
    Case("no_exec_start", "unit_exec_start_missing", ("Refusing",), with_unit=False),
    Case("unit_broken", "unit_broken",
         ("its unit file has errors and so no ExecStart=",
          "remotecli-agent.service:5: Failed to parse Type=simpel")),
    Case("no_init", "no_init",
         ("The image has no init",
          "execv(/usr/lib/systemd/systemd, /lib/systemd/systemd, /sbin/init) failed"),
         last=Phase.VMM_STARTED, waiting=INIT, exit_code=1),
    Case("inotify_exhausted", "host_limit",
         ("'Failed to create control group inotify object: Too many open files'",
          "fs.inotify.max_user_instances"), with_unit=False, exit_code=255),
    Case("port_taken", "port_in_use",
         ("Port 8080 is already taken inside the instance by python3 pid=62 "
          "unit=port-hog.service",)),
    Case("port_taken", "port_in_use", ("by another process",), with_unit=False),
    Case("token_missing", "token_missing",
         ("cannot read the token file /run/agent/token: No such file or directory",
          "hide-run.conf")),
    Case("hang", "agent_silent", ("never said it listens", "ExecStart: /bin/sleep infinity")),
    Case("hang", "unknown",
         ("No known cause matched", "Full console: /run/remotecli/instances/x/hang.log"),
         with_unit=False),
]  # fmt: skip


@pytest.mark.parametrize(
    "case", CASES, ids=[f"{c.boot}{'' if c.with_unit else '-console-only'}" for c in CASES]
)
def test_known_cause_is_named_with_its_evidence(case: Case) -> None:
    found = diagnose(case.evidence())

    assert found.cause == case.cause, found.hint
    assert [s for s in case.says if s not in found.hint] == [], found.hint


def test_network_online_ordering_alone_is_not_blamed() -> None:
    """The seed's suspect alone: the target is reached, so no hint may blame it.

    The console is the real boot of that variant as the tracker saw it just
    before the agent's listening line (a deadline that fell mid-start).
    """
    lines = console("online_harmless").splitlines()
    before_listening = lines[: next(i for i, ln in enumerate(lines) if "agent.listening" in ln)]
    evidence = Evidence("\n".join(before_listening), None, LISTENING, INIT)

    found = diagnose(evidence)

    assert found.cause == "unknown"
    assert "Not network-online.target: that target was reached during boot" in found.hint


def test_start_jobs_are_followed_to_the_one_that_runs() -> None:
    jobs = unit("wait_online_fake")
    assert jobs is not None

    chain = blocking_chain(parse_jobs(jobs.jobs), "remotecli-agent.service")

    assert [(j.unit, j.state) for j in chain] == [
        ("network-online.target", "waiting"),
        ("slow-wait-online.service", "running"),
    ]


def test_traceback_skips_lines_of_other_processes() -> None:
    lines = console("syntax_error").splitlines()
    at = next(i for i, ln in enumerate(lines) if "Traceback" in ln)
    lines.insert(at + 2, "systemd-logind[51]: New seat seat0.")

    found = traceback("\n".join(lines))

    assert found[0] == "Traceback (most recent call last):"
    assert found[-1] == "SyntaxError: invalid syntax"
    assert [ln for ln in found if "logind" in ln] == []
