"""VM operations for admins (list, inspect, console, agent sessions, delete) and ``/metrics``.

Every route needs an admin token (``/metrics`` too: it counts users' VMs and
logins; point Prometheus at it with ``authorization: {credentials_file: ...}``).
The DB is the source of truth for what is listed; live VMs add their health
as the monitor last saw it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field
from sqlalchemy import select

from remotecli.agent.codec import to_json
from remotecli.controller.api.deps import Admin, Context
from remotecli.controller.db.models import PromptRun, Vm
from remotecli.controller.errors import NotFound
from remotecli.controller.fleet.manager import VmManager
from remotecli.vmm import readiness
from remotecli.vmm.agentclient import AgentRequestError, AgentUnreachable

router = APIRouter()

VmId = Annotated[str, Field(pattern=r"^vm_[0-9a-f]{16}$")]
CONSOLE_MAX_LINES = 2000
#: One ``?since=`` answer at most; a follower asks again at once for the rest.
CONSOLE_CHUNK_BYTES = 256 * 1024
#: Where the next ``?since=`` read starts (a byte offset into the live console file).
OFFSET_HEADER = "X-Console-Offset"
#: ``true`` while the VM runs (its console can grow), ``false`` for a saved console.
LIVE_HEADER = "X-Console-Live"
#: The agent's login fields an operator sees: never the sign-in URL (it carries the
#: OAuth state), the user code or the callback.
SESSION_FIELDS = ("sessionId", "provider", "mode", "phase", "error", "exitCode",
                  "createdAt", "expiresAt", "timings")  # fmt: skip
RECENT_RUNS = 20
#: A page asks this every few seconds: a hung agent must not hold it.
AGENT_SECONDS = 5.0


class VmOut(BaseModel):
    id: str
    backend: str
    role: str
    state: str
    origin: str
    user_id: str | None = Field(serialization_alias="userId")
    instance_id: str | None = Field(serialization_alias="instanceId")
    #: Seconds to each readiness phase (``reached``), in each (``durations``), and skipped ones.
    phases: dict[str, Any]
    #: ``startSeconds``, ``claimSeconds``, ``destroySeconds``.
    timings: dict[str, Any]
    #: How the claim was served: each source tried (pool, restore, cold) and the result.
    claim: dict[str, Any] | None
    health: dict[str, Any]
    stop_reason: str | None = Field(serialization_alias="stopReason")
    created_at: datetime = Field(serialization_alias="createdAt")
    ready_at: datetime | None = Field(serialization_alias="readyAt")
    last_used_at: datetime | None = Field(serialization_alias="lastUsedAt")
    stopped_at: datetime | None = Field(serialization_alias="stoppedAt")


class VmDetail(VmOut):
    #: The structured failure: ``NotReady.to_dict()`` (phases, console tail, unit state,
    #: cause, hint), or the health checks that failed, or what teardown left.
    error: dict[str, Any] | None
    #: Whether ``GET /api/vms/{id}/console`` has something to show.
    console: bool


class VmList(BaseModel):
    backend: dict[str, Any]
    pool: dict[str, Any]
    #: The golden snapshot claims restore from: state (disabled, pending, making,
    #: ready, failed), its name and the golden VM's boot phases, or why not.
    snapshot: dict[str, Any]
    vms: list[VmOut]


def _utc(stamp: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes (stored as UTC); the API always says UTC."""
    if stamp is not None and stamp.tzinfo is None:
        return stamp.replace(tzinfo=UTC)
    return stamp


def _iso(stamp: datetime | None) -> str | None:
    utc = _utc(stamp)
    return utc.isoformat() if utc is not None else None


def _health(row: Vm, manager: VmManager | None) -> dict[str, Any]:
    handle = manager.get(row.id) if manager is not None else None
    if handle is not None:
        return handle.health.to_dict()
    return {
        "consecutiveFailures": row.health_failures,
        "lastCheckedAt": _iso(row.last_health_at),
        "lastOkAt": None,
        "lastError": row.health_error,
    }


def _fields(row: Vm, manager: VmManager | None) -> dict[str, Any]:
    return dict(
        id=row.id, backend=row.backend, role=row.role.value, state=row.state.value,
        origin=row.origin,
        user_id=row.user_id, instance_id=row.instance_id, phases=row.phases or {},
        timings=row.timings or {}, claim=row.claim_trace, health=_health(row, manager),
        stop_reason=row.stop_reason, created_at=_utc(row.created_at), ready_at=_utc(row.ready_at),
        last_used_at=_utc(row.last_used_at), stopped_at=_utc(row.stopped_at),
    )  # fmt: skip


def _detail(row: Vm, manager: VmManager | None) -> VmDetail:
    live = manager is not None and manager.get(row.id) is not None
    return VmDetail(**_fields(row, manager), error=row.error,
                    console=live or bool(row.console_tail))  # fmt: skip


async def _row(context: Context, vm_id: str) -> Vm:
    async with context.sessions() as session:
        row = await session.get(Vm, vm_id)
    if row is None:
        raise NotFound(f"no VM {vm_id!r}", code="unknown_vm")
    return row


def _manager_or_none(context: Context) -> VmManager | None:
    return context.vm_manager


@router.get("/api/vms", tags=["vms"])
async def list_vms(
    context: Context,
    admin: Admin,
    include_ended: Annotated[
        bool, Query(alias="all", description="include stopped and failed VMs")
    ] = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> VmList:
    """VMs, newest first: running ones, or with ``?all=true`` also the ended ones."""
    manager = context.vms()
    rows = await manager.store.list_rows(include_ended=include_ended, limit=limit)
    backend = manager.backend
    return VmList(
        backend={"name": backend.name, "isolation": backend.isolation,
                 "snapshots": backend.supports_snapshots, "reason": manager.backend_reason},
        pool=manager.pool.status(),
        snapshot=manager.golden.status(),
        vms=[VmOut(**_fields(row, manager)) for row in rows],
    )  # fmt: skip


@router.get("/api/vms/{vm_id}", tags=["vms"])
async def get_vm(vm_id: VmId, context: Context, admin: Admin) -> VmDetail:
    """One VM with its error evidence (a NotReady's phases, console tail, unit state and hint)."""
    return _detail(await _row(context, vm_id), _manager_or_none(context))


def _console_since(path: Path, offset: int) -> tuple[str, int]:
    """Complete lines from byte ``offset`` (at most CONSOLE_CHUNK_BYTES) and the next offset.

    A partial last line stays unread until its newline arrives, so a follower
    never shows half a line twice; ANSI sequences are stripped like the tail's.
    """
    try:
        with path.open("rb") as fh:
            size = fh.seek(0, 2)
            start = min(offset, size)
            fh.seek(start)
            data = fh.read(CONSOLE_CHUNK_BYTES)
    except FileNotFoundError:
        return "", 0
    end = data.rfind(b"\n") + 1
    if end == 0 and len(data) == CONSOLE_CHUNK_BYTES:
        end = len(data)  # one line longer than a chunk: hand it over in pieces
    lines = data[:end].decode(errors="replace").splitlines()
    text = "\n".join(readiness.strip_ansi(line) for line in lines)
    return (text + "\n" if text else ""), start + end


@router.get(
    "/api/vms/{vm_id}/console", tags=["vms"], response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {}}, "headers": {
        OFFSET_HEADER: {"description": "the byte offset to pass as ?since= next (live VMs)"},
        LIVE_HEADER: {"description": "true while the VM runs and its console can grow"},
    }}},
)  # fmt: skip
async def vm_console(
    vm_id: VmId,
    context: Context,
    admin: Admin,
    lines: Annotated[int, Query(ge=1, le=CONSOLE_MAX_LINES)] = 100,
    since: Annotated[
        int | None,
        Query(ge=0, description="follow: the console from this byte offset (X-Console-Offset)"),
    ] = None,
) -> PlainTextResponse:
    """The last ``lines`` of the VM's console (saved when it was destroyed), or with
    ``?since=`` what was added after that offset: poll with each answer's ``X-Console-Offset``
    to follow it; ``X-Console-Live: false`` means the VM is gone and nothing more will come."""
    row = await _row(context, vm_id)
    manager = _manager_or_none(context)
    handle = manager.get(vm_id) if manager is not None else None
    if handle is not None:
        path = handle.instance.console_path
        if since is not None:
            text, offset = _console_since(path, since)
        else:
            text = readiness.console_tail(path, max_chars=lines * 400, max_lines=lines)
            text = text + "\n" if text else ""
            offset = path.stat().st_size if path.exists() else 0
        headers = {OFFSET_HEADER: str(offset), LIVE_HEADER: "true"}
        return PlainTextResponse(text, headers=headers)
    if since is not None:  # the VM went away while someone followed it: nothing more to add
        return PlainTextResponse("", headers={OFFSET_HEADER: str(since), LIVE_HEADER: "false"})
    if not row.console_tail:
        raise NotFound(
            f"VM {vm_id} has no console to show: it is {row.state} and none was saved",
            code="no_console",
        )
    text = "\n".join(row.console_tail.splitlines()[-lines:])
    return PlainTextResponse(text + "\n" if text else "", headers={LIVE_HEADER: "false"})


class AgentSessions(BaseModel):
    #: Whether the VM runs now (only a running VM's agent can be asked).
    live: bool
    #: The agent's logins (``GET /sessions``), without URLs, user codes or callbacks.
    sessions: list[dict[str, Any]]
    #: The prompts running in the agent now (``GET /prompts``).
    runs: list[dict[str, Any]]
    #: The controller's newest prompt runs in this VM (never the prompt or the output).
    recent_runs: list[dict[str, Any]] = Field(serialization_alias="recentRuns")
    #: Why the agent could not be asked (``code``, ``message``), if it could not.
    agent_error: dict[str, Any] | None = Field(serialization_alias="agentError")


async def _recent_runs(context: Context, vm_id: str) -> list[dict[str, Any]]:
    query = (
        select(PromptRun).where(PromptRun.vm_id == vm_id)
        .order_by(PromptRun.created_at.desc()).limit(RECENT_RUNS)
    )  # fmt: skip
    async with context.sessions() as session:
        rows = (await session.execute(query)).scalars().all()
    return [
        {"runId": r.id, "userId": r.user_id, "provider": r.provider, "groupId": r.group_id,
         "status": r.status, "exitCode": r.exit_code, "errorCode": r.error_code,
         "usage": r.usage, "costUsd": r.cost_usd, "createdAt": _iso(r.created_at),
         "finishedAt": _iso(r.finished_at)}
        for r in rows
    ]  # fmt: skip


@router.get("/api/vms/{vm_id}/sessions", tags=["vms"], response_model_by_alias=True)
async def vm_sessions(vm_id: VmId, context: Context, admin: Admin) -> AgentSessions:
    """What the VM's agent is doing: its logins and running prompts (asked through the
    controller's own client: the agent's token never leaves the controller), and the
    controller's recent prompt runs in this VM."""
    await _row(context, vm_id)
    manager = _manager_or_none(context)
    handle = manager.get(vm_id) if manager is not None else None
    recent = await _recent_runs(context, vm_id)
    if handle is None:
        return AgentSessions(live=False, sessions=[], runs=[], recent_runs=recent,
                             agent_error=None)  # fmt: skip
    try:
        logins = await handle.agent.logins(timeout=AGENT_SECONDS)
        running = await handle.agent.runs(timeout=AGENT_SECONDS)
    except (AgentUnreachable, AgentRequestError) as exc:
        return AgentSessions(live=True, sessions=[], runs=[], recent_runs=recent,
                             agent_error={"code": exc.code, "message": str(exc)})  # fmt: skip
    shown = [to_json(s) for s in logins]
    sessions = [{k: s[k] for k in SESSION_FIELDS} for s in shown]
    return AgentSessions(live=True, sessions=sessions, runs=[to_json(r) for r in running],
                         recent_runs=recent, agent_error=None)  # fmt: skip


@router.delete(
    "/api/vms/{vm_id}", tags=["vms"],
    responses={502: {"description": "vm_error: the backend could not destroy it (evidence)"}},
)  # fmt: skip
async def delete_vm(vm_id: VmId, context: Context, admin: Admin) -> VmDetail:
    """Destroy the VM (claimed ones sync their credentials back first); idempotent."""
    manager = context.vms()
    await _row(context, vm_id)
    await manager.destroy(vm_id, "deleted by admin")
    return _detail(await _row(context, vm_id), manager)


@router.get("/metrics", tags=["system"], response_class=PlainTextResponse)
async def metrics(context: Context, admin: Admin) -> Response:
    """Prometheus metrics of this controller (text exposition format)."""
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(context.metrics.render(), media_type=CONTENT_TYPE_LATEST)
