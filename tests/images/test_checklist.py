"""The checklist's verdicts from an instance's facts (pure: no boot needed)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from remotecli.validation.checklist import evaluate
from remotecli.vmm.base import Phase, Readiness

READY = Readiness(
    reached={
        Phase.VMM_STARTED: 0.01,
        Phase.INIT_STARTED: 0.1,
        Phase.AGENT_LISTENING: 0.35,
        Phase.AGENT_READY: 0.4,
    }
)
HEALTH = {"status": "ok", "timestamp": "2026-11-29T17:00:00.000Z", "activeSessions": 0}
GOOD: dict[str, Any] = {
    "pid1": "systemd",
    "systemState": "running",
    "failedUnits": [],
    "agentUnit": {
        "name": "remotecli-agent.service",
        "activeState": "active",
        "subState": "running",
        "unitFileState": "enabled",
        "restarts": "0",
        "waitsForNetworkOnline": False,
    },
    "clis": [
        {
            "provider": "codex",
            "executable": "codex",
            "installed": True,
            "version": "codex-cli 0.171.0",
            "error": None,
        },
    ],
    "credentialDirs": [
        {"path": "/home/cli/.codex", "ok": True, "problem": None, "owner": "cli", "mode": "0700"}
    ],
}


def _failed(diagnostics: dict[str, Any], health: dict[str, Any] = HEALTH) -> list[str]:
    return [c.name for c in evaluate(READY, health, diagnostics, ["codex"]) if not c.ok]


def test_a_healthy_instance_passes_every_check() -> None:
    checks = evaluate(READY, HEALTH, GOOD, ["codex"])
    assert [c.name for c in checks if not c.ok] == []
    assert len(checks) == 9


@pytest.mark.parametrize(
    ("path", "value", "failing"),
    [
        (("pid1",), "process_api", "systemd is PID 1"),
        (("agentUnit", "unitFileState"), "disabled", "remotecli-agent.service is enabled"),
        (("agentUnit", "activeState"), "activating", "remotecli-agent.service is active"),
        (
            ("agentUnit", "waitsForNetworkOnline"),
            True,
            "remotecli-agent.service does not wait for network-online.target",
        ),
        (
            ("systemState",),
            "degraded",
            "systemctl is-system-running is 'running' with no failed units",
        ),
    ],
)
def test_each_fact_fails_its_own_check(path: tuple[str, ...], value: Any, failing: str) -> None:
    facts = copy.deepcopy(GOOD)
    target = facts
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    assert _failed(facts) == [failing]


def test_a_cli_that_does_not_run_shows_its_error() -> None:
    facts = copy.deepcopy(GOOD)
    facts["clis"][0].update(version=None, error="`codex --version` exited 127: not found")
    checks = evaluate(READY, HEALTH, facts, ["codex", "gemini_cli"])
    failed = {c.name: c.evidence for c in checks if not c.ok}
    assert failed == {
        "codex --version runs": "`codex --version` exited 127: not found",
        "gemini_cli --version runs": "not installed",
    }


def test_health_without_the_seed_keys_fails() -> None:
    assert _failed(GOOD, {"status": "ok"}) == ["GET /health returns 200 with the seed's JSON"]


def test_no_listening_marker_fails_the_listen_check() -> None:
    quiet = Readiness(reached={Phase.VMM_STARTED: 0.01, Phase.AGENT_READY: 0.4})
    failed = [c.name for c in evaluate(quiet, HEALTH, GOOD, ["codex"]) if not c.ok]
    assert failed == ["the agent listens"]
