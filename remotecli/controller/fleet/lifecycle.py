"""One VM's life on the backend, kept in its row: boot to ready (or a recorded failure), teardown.

``VmLifecycle`` does the work for the manager (``vms.py``), which decides
*which* VM to start or stop and keeps the handles:

- ``boot``: a row (STARTING, token sealed), ``backend.create`` → ``start`` →
  ``wait_ready``, then READY/CLAIMED with the phases and timings. Any failure
  destroys what ran and records why: FAILED with the error (``NotReady``'s
  evidence), or STOPPED when the start was cancelled or the VM was doomed
  meanwhile (destroyed by an admin, the controller stopping).
- ``teardown``: the before_destroy hooks (claimed VMs only), the console tail
  saved in the row, ``instance.destroy()`` (verified by the backend), the row
  STOPPED (or FAILED, with what went wrong).

Cleanup runs shielded: a caller cancelled twice still leaves nothing behind,
and ``stop`` waits for ``cleanups``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from remotecli.controller.db.engine import retry_unavailable
from remotecli.controller.db.models import utcnow
from remotecli.controller.fleet.states import VmRole, VmState
from remotecli.controller.fleet.store import VmStore, instance_id_for
from remotecli.controller.metrics import Metrics
from remotecli.errors import NotReady, RemoteCliError, VmError
from remotecli.vmm import readiness as readiness_mod
from remotecli.vmm.agentclient import AgentClient
from remotecli.vmm.base import (
    Backend,
    Deadlines,
    Instance,
    InstanceSpec,
    Readiness,
    Snapshot,
    SnapshotBackend,
)

log = logging.getLogger("remotecli.controller.fleet.manager")

#: A before_destroy hook talks to the agent (sync credentials back); a dead
#: agent must not hold a teardown for longer than this.
HOOK_SECONDS = 30.0
#: Console kept in the row when a VM goes away (its files go with it).
SAVED_CONSOLE_CHARS = readiness_mod.TAIL_CHARS
CANCELLED = "start cancelled (the controller stopped or the caller left)"

Hook = Callable[["VmHandle"], Awaitable[None]]


@dataclass
class Health:
    failures: int = 0
    last_checked_at: datetime | None = None
    last_ok_at: datetime | None = None
    last_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "consecutiveFailures": self.failures,
            "lastCheckedAt": self.last_checked_at.isoformat() if self.last_checked_at else None,
            "lastOkAt": self.last_ok_at.isoformat() if self.last_ok_at else None,
            "lastError": self.last_error,
        }


@dataclass
class VmHandle:
    vm_id: str
    role: VmRole
    origin: str  # "pool" | "restore" | "cold"
    instance: Instance = field(repr=False)
    #: Bound to the VM's socket and token (never shown: repr=False).
    agent: AgentClient = field(repr=False)
    readiness: Readiness
    user_id: str | None = None
    state: VmState = VmState.READY
    health: Health = field(default_factory=Health)
    #: time.monotonic() of the last use (claim, ``touch``) and of the claim.
    last_used: float = field(default_factory=time.monotonic)
    claimed_at: float | None = None


@dataclass
class StartTicket:
    """A start in flight; ``doomed`` says why it must be destroyed as soon as it is ready."""

    doomed: str | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


class Doomed(Exception):
    """Raised inside a start when the VM was destroyed (or the controller stopped) meanwhile."""


def phases_json(readiness: Readiness) -> dict[str, Any]:
    return {
        "reached": {p.value: s for p, s in readiness.reached.items()},
        "durations": readiness.durations(),
        "skipped": {p.value: r for p, r in readiness.skipped.items()},
    }


def error_dict(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, RemoteCliError):
        return exc.to_dict()
    return {"code": "vm_error", "message": f"{type(exc).__name__}: {exc}"}


@contextlib.contextmanager
def logged(what: str) -> Iterator[None]:
    """Bookkeeping that must not stop a teardown: log its failure and go on."""
    try:
        yield
    except Exception:
        log.exception("%s failed", what)


class VmLifecycle:
    def __init__(
        self, store: VmStore, backend: Backend, metrics: Metrics, image_rootfs: Path,
        agent_env: Mapping[str, str], deadlines: Deadlines,
    ) -> None:  # fmt: skip
        self.store = store
        self.backend = backend
        self.metrics = metrics
        self.image_rootfs = image_rootfs
        self.agent_env = dict(agent_env)
        self.deadlines = deadlines
        self.hooks: list[Hook] = []
        #: Run on every instance once it is ready, before it is handed out (the
        #: offline demo makes its test bed reachable inside the VM's network).
        self.after_ready: list[Callable[[Instance], Awaitable[None]]] = []
        self.cleanups: set[asyncio.Task[None]] = set()
        #: The manager is stopping: bookkeeping stops retrying (reconcile fixes the rows).
        self.closing = False

    # -- boot -------------------------------------------------------------------------------

    async def boot(
        self, vm_id: str, role: VmRole, origin: str, user_id: str | None, *, claimed: bool,
        trace: dict[str, Any] | None, ticket: StartTicket, snapshot: Snapshot | None = None,
    ) -> VmHandle:  # fmt: skip
        """Start one VM (a restore of ``snapshot`` when given, else a cold boot) until ready."""
        token = secrets.token_urlsafe(32)
        await self.store.insert(
            vm_id=vm_id, backend=self.backend.name, role=role, origin=origin,
            token=token, user_id=user_id,
        )  # fmt: skip
        spec = InstanceSpec(
            image=self.image_rootfs, instance_id=instance_id_for(vm_id), agent_token=token,
            role=role.value, agent_env=self.agent_env, deadlines=self.deadlines,
        )  # fmt: skip
        started = time.monotonic()
        instance: Instance | None = None
        agent: AgentClient | None = None
        try:
            if snapshot is not None:
                instance = cast(SnapshotBackend, self.backend).restore(spec, snapshot)
            else:
                instance = self.backend.create(spec)
            await instance.start()
            ready = await instance.wait_ready()
            for prepare in self.after_ready:
                await prepare(instance)
            if ticket.doomed is not None:
                raise Doomed(ticket.doomed)
            agent = AgentClient(instance.agent_endpoint, token)
            handle = VmHandle(
                vm_id=vm_id, role=role, origin=origin, instance=instance, agent=agent,
                readiness=ready, user_id=user_id,
                state=VmState.CLAIMED if claimed else VmState.READY,
            )  # fmt: skip
            seconds = round(time.monotonic() - started, 4)
            await self.store.update(
                vm_id, handle.state, phases=phases_json(ready), ready_at=utcnow(),
                last_used_at=utcnow(), timings={"startSeconds": seconds}, claim_trace=trace,
            )  # fmt: skip
        except BaseException as exc:
            if agent is not None:
                await agent.aclose()
            failed_after = round(time.monotonic() - started, 4)
            await self.shielded(self._abort(vm_id, instance, exc, trace, failed_after))
            if isinstance(exc, Doomed):
                raise VmError(f"VM {vm_id} was destroyed while it started: {exc}") from None
            raise
        self.metrics.vm_ready(self.backend.name, ready.durations())
        log.info("VM ready", extra={"vm_id": vm_id, "role": role.value, "seconds": seconds})
        return handle

    async def _abort(
        self, vm_id: str, instance: Instance | None, exc: BaseException,
        trace: dict[str, Any] | None, failed_after: float,
    ) -> None:  # fmt: skip
        """A start that did not end in a usable VM: destroy what ran, record why."""
        values: dict[str, Any] = {
            "stopped_at": utcnow(), "claim_trace": trace, "console_tail": None,
            "timings": {"failedAfterSeconds": failed_after},
        }  # fmt: skip
        teardown = None
        if instance is not None:
            values["console_tail"] = self._tail(instance)
            values["phases"] = phases_json(instance.readiness)
            teardown = await self._destroy_instance(vm_id, instance)
        if isinstance(exc, Doomed | asyncio.CancelledError):
            state = VmState.STOPPED
            values["stop_reason"] = str(exc) if isinstance(exc, Doomed) else CANCELLED
            error = None
        else:
            state, error = VmState.FAILED, error_dict(exc)
            cause = exc.cause if isinstance(exc, NotReady) else str(error["code"])
            values["stop_reason"] = (
                f"not ready: {exc.cause}, waited for {exc.waiting_for}"
                if isinstance(exc, NotReady) else f"start failed: {error['message'][:300]}"
            )  # fmt: skip
            self.metrics.vm_failed(cause)
            log.warning("VM %s failed to start: %s", vm_id, error["message"])
        if teardown is not None:
            state = VmState.FAILED
            error = {**(error or {"code": "teardown_incomplete", "message": teardown}),
                     "teardown": teardown}  # fmt: skip
        if error is not None:
            values["error"] = error
        with logged(f"recording the failed start of VM {vm_id}"):
            await self.store.update(vm_id, state, **values)

    # -- teardown ----------------------------------------------------------------------------

    async def teardown(
        self, handle: VmHandle, reason: str, error: dict[str, Any] | None, cause: str | None,
        *, run_hooks: bool,
    ) -> None:  # fmt: skip
        """Hooks, console saved, instance destroyed, row ended. Never raises for bookkeeping."""
        started = time.monotonic()
        with logged(f"marking VM {handle.vm_id} stopping"):
            await self.store.update(handle.vm_id, VmState.STOPPING)
        hook_errors = await self._run_hooks(handle) if run_hooks else []
        tail = self._tail(handle.instance)
        try:
            teardown = await self._destroy_instance(handle.vm_id, handle.instance)
        finally:
            await handle.agent.aclose()
        if teardown is not None:
            error = {**(error or {"code": "teardown_incomplete", "message": teardown}),
                     "teardown": teardown}  # fmt: skip
        if hook_errors:
            error = {**(error or {"code": "hook_failed", "message": "; ".join(hook_errors)}),
                     "hookErrors": hook_errors}  # fmt: skip
        if cause is not None:
            self.metrics.vm_failed(cause)
        failed = cause is not None or teardown is not None
        values: dict[str, Any] = {
            "stop_reason": reason, "stopped_at": utcnow(), "console_tail": tail,
            "timings": {"destroySeconds": round(time.monotonic() - started, 4)},
        }  # fmt: skip
        if error:
            values["error"] = error
        with logged(f"recording the end of VM {handle.vm_id}"):
            state = VmState.FAILED if failed else VmState.STOPPED
            # Retried while the database is away or full: the instance is gone, and a
            # row left "claimed" would say otherwise until the next start's reconcile.
            await retry_unavailable(
                lambda: self.store.update(handle.vm_id, state, **values),
                f"record the end of VM {handle.vm_id}", give_up=lambda: self.closing,
            )  # fmt: skip
        log.info("destroyed VM", extra={"vm_id": handle.vm_id, "reason": reason})

    async def _run_hooks(self, handle: VmHandle) -> list[str]:
        errors = []
        for hook in self.hooks:
            name = getattr(hook, "__qualname__", repr(hook))
            try:
                async with asyncio.timeout(HOOK_SECONDS):
                    await hook(handle)
            except Exception as exc:  # a hook must not keep a VM alive; say what was lost
                message = f"{name}: {type(exc).__name__}: {exc}"
                log.error("before_destroy hook failed for VM %s: %s", handle.vm_id, message)
                errors.append(message)
        return errors

    async def _destroy_instance(self, vm_id: str, instance: Instance) -> str | None:
        """``instance.destroy()``; what it left behind, if anything (already logged)."""
        try:
            await instance.destroy()
        except Exception as exc:  # recorded on the row; the VM is out of our hands
            log.error("tearing down VM %s left things behind: %s", vm_id, exc)
            self.metrics.vm_failed("teardown_incomplete")
            return str(exc)
        return None

    @staticmethod
    def _tail(instance: Instance) -> str:
        return readiness_mod.console_tail(instance.console_path, SAVED_CONSOLE_CHARS)

    async def shielded(self, coro: Coroutine[Any, Any, None]) -> None:
        """Cleanup that finishes even if the caller is cancelled again (``stop`` awaits it)."""
        task = asyncio.get_running_loop().create_task(coro)
        self.cleanups.add(task)
        task.add_done_callback(self.cleanups.discard)
        await asyncio.shield(task)
