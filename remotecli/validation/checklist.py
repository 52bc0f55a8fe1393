"""The seed's verification checklist, made executable against a booted instance.

The seed's team ticked "files exist in the snapshot" and "service file
correct" and still had no agent. These checks look at the running instance
instead: what PID 1 is, what systemd says about the agent unit, whether the
agent listens and answers, whether each CLI runs, whether the credential
directories are private. ``evaluate`` is pure (facts in, verdicts out);
``validate`` boots an instance and gathers the facts.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from remotecli.agent.codec import to_json
from remotecli.errors import NotReady
from remotecli.vmm.agentclient import AgentClient
from remotecli.vmm.base import Backend, InstanceSpec, Phase, Readiness

SEED_HEALTH_KEYS = ("status", "timestamp", "activeSessions")


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    evidence: str


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)
    readiness: Readiness | None = None
    not_ready: NotReady | None = None

    @property
    def ok(self) -> bool:
        return self.not_ready is None and all(c.ok for c in self.checks)


def evaluate(
    readiness: Readiness,
    health: dict[str, Any],
    diagnostics: dict[str, Any],
    expected_clis: Sequence[str],
) -> list[Check]:
    """Verdicts from the facts of one booted instance."""
    checks = [
        Check(
            "systemd is PID 1",
            diagnostics.get("pid1") == "systemd",
            f"/proc/1/comm = {diagnostics.get('pid1')!r}",
        )
    ]
    unit = diagnostics.get("agentUnit") or {}
    name = unit.get("name", "the agent unit")
    checks.append(
        Check(
            f"{name} is enabled",
            unit.get("unitFileState") == "enabled",
            f"UnitFileState={unit.get('unitFileState')}",
        )
    )
    checks.append(
        Check(
            f"{name} is active",
            (unit.get("activeState"), unit.get("subState")) == ("active", "running"),
            f"ActiveState={unit.get('activeState')} SubState={unit.get('subState')} "
            f"restarts={unit.get('restarts')}",
        )
    )
    checks.append(
        Check(
            f"{name} does not wait for network-online.target",
            unit.get("waitsForNetworkOnline") is False,
            "After= lists network-online.target"
            if unit.get("waitsForNetworkOnline")
            else "After= does not list network-online.target",
        )
    )
    listening = readiness.reached.get(Phase.AGENT_LISTENING)
    checks.append(
        Check(
            "the agent listens",
            listening is not None,
            f"listening marker on the console {listening:.2f} s after start"
            if listening is not None
            else "no listening marker on the console",
        )
    )
    missing = [k for k in SEED_HEALTH_KEYS if k not in health]
    checks.append(
        Check(
            "GET /health returns 200 with the seed's JSON",
            health.get("status") == "ok" and not missing,
            f"{ {k: health.get(k) for k in SEED_HEALTH_KEYS} }"
            + (f"; missing {missing}" if missing else ""),
        )
    )
    clis = {c["provider"]: c for c in diagnostics.get("clis", [])}
    for provider in expected_clis:
        cli = clis.get(provider, {})
        checks.append(
            Check(
                f"{cli.get('executable', provider)} --version runs",
                bool(cli.get("installed"))
                and cli.get("error") is None
                and bool(cli.get("version")),
                cli.get("error") or cli.get("version") or "not installed",
            )
        )
    for directory in diagnostics.get("credentialDirs", []):
        checks.append(
            Check(
                f"{directory['path']} is private to the CLI user",
                bool(directory.get("ok")),
                directory.get("problem")
                or f"owner {directory.get('owner')}, mode {directory.get('mode')}",
            )
        )
    failed = diagnostics.get("failedUnits") or []
    state = diagnostics.get("systemState")
    checks.append(
        Check(
            "systemctl is-system-running is 'running' with no failed units",
            state == "running" and not failed,
            f"state={state}; failed units: {', '.join(failed) or 'none'}",
        )
    )
    return checks


async def validate(
    backend: Backend,
    image: Path,
    expected_clis: Sequence[str],
    *,
    instance_id: str | None = None,
    layers: Sequence[Path] = (),
) -> Report:
    """Boot ``image`` (a rootfs) on ``backend``, run the checklist, always destroy the instance."""
    token = secrets.token_urlsafe(32)
    spec = InstanceSpec(
        image=image,
        instance_id=instance_id or f"validate-{secrets.token_hex(4)}",
        agent_token=token,
        role="validate",
        layers=tuple(layers),
    )
    instance = backend.create(spec)
    report = Report()
    try:
        await instance.start()
        try:
            report.readiness = await instance.wait_ready()
        except NotReady as exc:
            report.not_ready = exc
            report.readiness = instance.readiness
            return report
        async with AgentClient(instance.agent_endpoint, token) as agent:
            health = await agent.health()
            diagnostics = await agent.diagnostics()
        # Judged as the seed's JSON (what its team read), so missing keys show as missing.
        report.checks = evaluate(
            report.readiness, to_json(health), to_json(diagnostics), expected_clis
        )
        return report
    finally:
        await instance.destroy()
