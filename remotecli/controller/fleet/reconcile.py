"""Reconciliation at start: the DB says which VMs run, the backend says which really do.

For every VM row in a live state (STARTING, READY, CLAIMED, STOPPING):

- its instance is not running → STOPPED, "gone after restart";
- it runs, was READY or CLAIMED, its sealed token opens and its agent answers
  ``GET /health`` and accepts the token → adopted (a READY one rejoins the pool);
- otherwise (mid-start or mid-stop when the controller died, a dead agent, a
  token that does not open) → reaped, STOPPED with the reason.

Then every instance the backend finds that no adopted row accounts for is
reaped (``backend.reap``: its process, mounts, cgroups, socket and files), and
so is everything left under the state root of a backend this controller used
before (``stale_backends``). Nothing is left that the DB does not describe.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from remotecli.controller.db.models import Vm, utcnow
from remotecli.controller.fleet.lifecycle import VmHandle
from remotecli.controller.fleet.states import VmState
from remotecli.controller.fleet.store import VmStore, instance_id_for
from remotecli.controller.vault.cipher import VaultError
from remotecli.errors import RemoteCliError, VmError
from remotecli.vmm import readiness as readiness_mod
from remotecli.vmm import statedir
from remotecli.vmm.agentclient import AgentClient
from remotecli.vmm.base import (
    Backend,
    Deadlines,
    InstanceSpec,
    InstanceState,
    Phase,
    Readiness,
    UnitState,
)
from remotecli.vmm.endpoint import AgentEndpoint

log = logging.getLogger("remotecli.controller.fleet.reconcile")

#: Seconds for the adoption checks of one VM (/health, then an authenticated call).
ADOPT_TIMEOUT = 5.0


@dataclass
class ReconcileReport:
    adopted: list[str] = field(default_factory=list)
    #: VM id → why it is now STOPPED.
    stopped: dict[str, str] = field(default_factory=dict)
    #: Instance ids destroyed because no row accounted for them.
    reaped: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"adopted": self.adopted, "stopped": self.stopped, "reaped": self.reaped,
                "errors": self.errors}  # fmt: skip


class Fleet(Protocol):
    """What reconciliation reads from the fleet (``VmManager``) and the one thing it does:
    ``register`` an adopted VM's handle."""

    @property
    def backend(self) -> Backend: ...

    @property
    def store(self) -> VmStore: ...

    @property
    def stale_backends(self) -> tuple[Backend, ...]: ...

    @property
    def image_rootfs(self) -> Path: ...

    @property
    def agent_env(self) -> Mapping[str, str]: ...

    @property
    def deadlines(self) -> Deadlines: ...

    def register(self, handle: VmHandle) -> None: ...


@runtime_checkable
class _Rooted(Protocol):
    """Backends that keep each instance in ``state_root/<id>`` (nspawn, fake)."""

    state_root: Path


class AdoptedInstance:
    """An instance found running after a restart, driven through the backend's public API.

    The backends have no "attach" yet; their state directory layout
    (``vmm/statedir.py``) gives the socket and console, and ``reap`` destroys it
    as thoroughly as ``Instance.destroy`` would.
    """

    def __init__(self, backend: Backend, spec: InstanceSpec, root: Path, ready: Readiness):
        self.backend = backend
        self.spec = spec
        self.state = InstanceState.READY
        self.readiness = ready
        directory = statedir.StateDir(root / spec.instance_id)
        meta = directory.read_meta()
        # VM backends record where their agent listens; containers use the run dir's socket.
        recorded = meta.get("agent_endpoint")
        self.agent_endpoint = (
            AgentEndpoint.from_json(recorded)
            if isinstance(recorded, dict)
            else AgentEndpoint.unix(directory.socket)
        )
        self.console_path = directory.console
        pid = meta.get("pid")
        self.pid: int | None = pid if isinstance(pid, int) else None

    async def start(self) -> None:
        raise VmError(f"instance {self.spec.instance_id} was adopted running; it cannot start")

    async def wait_ready(self) -> Readiness:
        return self.readiness

    async def destroy(self) -> None:
        await self.backend.reap(self.spec.instance_id)
        self.state = self.state.to(
            InstanceState.STOPPED, subject=f"instance {self.spec.instance_id}"
        )

    def console_tail(self, max_chars: int = 4000) -> str:
        return readiness_mod.console_tail(self.console_path, max_chars)

    def exit_code(self) -> int | None:
        return None  # not our child: /health alone tells

    async def unit_state(self) -> UnitState | None:
        return None


def readiness_of(row: Vm) -> Readiness:
    """The readiness a row recorded (``phases_json``), back as an object."""
    phases = row.phases or {}
    return Readiness(
        reached={Phase(p): float(s) for p, s in (phases.get("reached") or {}).items()},
        skipped={Phase(p): str(r) for p, r in (phases.get("skipped") or {}).items()},
    )


async def reconcile(manager: Fleet) -> ReconcileReport:
    report = ReconcileReport()
    backend = manager.backend
    running = set(await backend.list_running())
    accounted: set[str] = set()
    for row in await manager.store.live_rows():
        instance_id = row.instance_id or instance_id_for(row.id)
        if row.backend != backend.name:
            why = (f"gone after restart: it ran on the {row.backend} backend and this "
                   f"controller now runs {backend.name}")  # fmt: skip
        elif instance_id not in running:
            why = "gone after restart: its instance no longer runs"
        else:
            accounted.add(instance_id)
            verdict = await _adopt(manager, row, instance_id)
            if not isinstance(verdict, str):
                manager.register(verdict)
                report.adopted.append(row.id)
                continue
            why = f"not adopted after restart: {verdict}"
            await _reap(backend, instance_id, report)
        await manager.store.update(row.id, VmState.STOPPED, stop_reason=why, stopped_at=utcnow())
        report.stopped[row.id] = why
    for instance_id in sorted(running - accounted):
        await _reap(backend, instance_id, report)
    for stale in manager.stale_backends:
        for instance_id in await stale.list_running():
            await _reap(stale, instance_id, report)
    if report.adopted or report.stopped or report.reaped or report.errors:
        log.warning("reconciled VMs after start: %s", report.to_dict())
    return report


async def _reap(backend: Backend, instance_id: str, report: ReconcileReport) -> None:
    try:
        await backend.reap(instance_id)
    except RemoteCliError as exc:
        report.errors.append(f"{backend.name} {instance_id}: {exc.message}")
        log.error("could not reap %s instance %s: %s", backend.name, instance_id, exc.message)
    else:
        report.reaped.append(instance_id)


async def _adopt(manager: Fleet, row: Vm, instance_id: str) -> VmHandle | str:
    """A handle for a running VM, or why it cannot be adopted."""
    state = row.state
    if state not in (VmState.READY, VmState.CLAIMED):
        return f"it was {state.value} when the controller stopped"
    backend = manager.backend
    if not isinstance(backend, _Rooted):
        return f"the {backend.name} backend cannot re-attach to running instances"
    try:
        token = manager.store.open_token(row)
    except VaultError as exc:
        return f"its agent token does not open ({exc.message})"
    spec = InstanceSpec(
        image=manager.image_rootfs, instance_id=instance_id, agent_token=token,
        role=row.role.value,
        agent_env=manager.agent_env, deadlines=manager.deadlines,
    )  # fmt: skip
    instance = AdoptedInstance(backend, spec, backend.state_root, readiness_of(row))
    probe = await readiness_mod.probe_health(instance.agent_endpoint, ADOPT_TIMEOUT)
    if not probe.ok:
        return f"its agent does not answer GET /health ({probe.detail})"
    agent = AgentClient(instance.agent_endpoint, token, timeout=ADOPT_TIMEOUT)
    try:
        # An authenticated call: the agent behind the socket is the one the token was made for.
        await agent.logins()
    except RemoteCliError as exc:
        await agent.aclose()
        return f"its agent refused the stored token ({exc.message})"
    await agent.aclose()
    now_wall, now = utcnow(), time.monotonic()
    last_used = row.last_used_at or row.ready_at or row.created_at
    if last_used.tzinfo is None:  # SQLite hands datetimes back naive (they were UTC)
        last_used = last_used.replace(tzinfo=now_wall.tzinfo)
    ago = max(0.0, (now_wall - last_used).total_seconds())
    handle = VmHandle(
        vm_id=row.id, role=row.role, origin=row.origin, instance=instance,
        agent=AgentClient(instance.agent_endpoint, token), readiness=instance.readiness,
        user_id=row.user_id, state=state, last_used=now - ago,
        claimed_at=now - ago if state is VmState.CLAIMED else None,
    )  # fmt: skip
    handle.health.last_checked_at = handle.health.last_ok_at = now_wall
    await manager.store.update(
        row.id, last_health_at=now_wall, health_failures=0, health_error=None
    )
    return handle
