"""The VM manager: claims, warm pool, health, reconciliation and teardown of the controller's VMs.

Other services use it through ``context.vms()``::

    vms: VmManager = context.vms()
    handle = await vms.claim(VmRole.AUTH)            # pool → restore → cold, waits for ready
    await handle.agent.start_login("codex", None, wait_seconds=10)
    await vms.destroy(handle.vm_id, "login finished")

    handle = await vms.cli_vm(user_id)               # the user's CLI VM, or a new one
    vms.add_before_destroy(sync_credentials_back)    # runs before a claimed VM goes away

A claim takes a READY VM of the role from the warm pool (checked with one
``GET /health`` first), else restores the golden snapshot where the backend
can (``golden.py`` makes it in the background at start-up; until it is
ready, or if a restore fails, the claim trace says so), else cold-starts
one. The pool is refilled from the snapshot too once there is one. A VM
that misses readiness is destroyed, its row says FAILED with
``NotReady.to_dict()`` as the evidence, and ``NotReady`` reaches the caller
(the API answers 503 with that evidence).

The DB is the source of truth for what should run; ``start()`` reconciles it
with what the backend finds (``reconcile.py``), then starts the pool filler
(``pool.py``) and the health monitor (``monitor.py``). The split between
memory and DB: ``VmHandle``s (live instances and agent clients) live here; every
state change is written through ``VmStore`` before it is acted on by others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from functools import partial
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from remotecli.controller.context import AppContext
from remotecli.controller.db.models import User, new_id, utcnow
from remotecli.controller.errors import NotFound, Unavailable
from remotecli.controller.fleet.golden import GoldenSnapshot
from remotecli.controller.fleet.lifecycle import (
    HOOK_SECONDS,
    Health,
    Hook,
    StartTicket,
    VmHandle,
    VmLifecycle,
)
from remotecli.controller.fleet.monitor import HealthMonitor
from remotecli.controller.fleet.pool import PoolFiller
from remotecli.controller.fleet.reconcile import ReconcileReport, reconcile
from remotecli.controller.fleet.runtime import build_runtime
from remotecli.controller.fleet.states import VmRole, VmState
from remotecli.controller.fleet.store import VmStore
from remotecli.controller.metrics import Metrics
from remotecli.errors import RemoteCliError
from remotecli.vmm import readiness as readiness_mod
from remotecli.vmm.base import Backend, Deadlines, Instance, Snapshot

__all__ = [
    "HOOK_SECONDS", "Health", "VmHandle", "VmManager", "start_service", "stop_service",
]  # fmt: skip

log = logging.getLogger("remotecli.controller.fleet.manager")

STOPPING = "the controller stopped while it started"

_NO_ENV: Mapping[str, str] = MappingProxyType({})
T = TypeVar("T")


class VmManager:
    def __init__(
        self,
        context: AppContext,
        backend: Backend,
        image_rootfs: Path,
        *,
        agent_env: Mapping[str, str] = _NO_ENV,
        deadlines: Deadlines | None = None,
        stale_backends: tuple[Backend, ...] = (),
        pool_backoff: tuple[float, float] = (1.0, 60.0),
    ) -> None:
        self.context = context
        self.settings = context.settings
        self.backend = backend
        self.image_rootfs = image_rootfs
        self.agent_env = dict(agent_env)
        self.deadlines = deadlines or Deadlines()
        self.stale_backends = stale_backends
        #: Why this backend was chosen (set by ``start_service``).
        self.backend_reason = ""
        self.store = VmStore(context.sessions, context.vault)
        self.metrics: Metrics = context.metrics
        self.lifecycle = VmLifecycle(
            self.store, backend, self.metrics, image_rootfs, self.agent_env, self.deadlines
        )
        self.pool = PoolFiller(
            self,
            {VmRole.AUTH: self.settings.warm_pool_auth, VmRole.CLI: self.settings.warm_pool_cli},
            backoff=pool_backoff,
        )
        self.monitor = HealthMonitor(self)
        self.golden = GoldenSnapshot(
            backend, self.settings.state_dir / "snapshots", image_rootfs, self.agent_env,
            self.deadlines, enabled=self.settings.snapshots,
        )  # fmt: skip
        self.reconciled: ReconcileReport | None = None
        self._handles: dict[str, VmHandle] = {}
        self._pool: dict[VmRole, deque[str]] = {role: deque() for role in VmRole}
        self._launching: dict[str, StartTicket] = {}
        self._destroying: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._user_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        self._closed = False

    # -- life of the manager ---------------------------------------------------------

    async def start(self) -> None:
        """Reconcile the DB with what runs, then keep the pool filled and the VMs checked."""
        self.metrics.on_scrape(self._scrape)
        self.reconciled = await reconcile(self)
        self.golden.start()
        self.pool.start()
        self.monitor.start()

    async def stop(self) -> None:
        """Stop the background tasks and destroy every VM (claimed ones run the hooks first).

        Nothing outlives a clean stop. After a crash the VMs keep running and
        the next ``start()`` adopts or reaps them.
        """
        self._closed = True
        self.lifecycle.closing = True
        for ticket in self._launching.values():
            ticket.doomed = ticket.doomed or STOPPING
        await self.pool.stop()
        await self.monitor.stop()
        await self.golden.stop()
        for task in list(self._tasks):
            task.cancel()  # starts in flight clean up after themselves
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(
            *(self.destroy(vm_id, "controller stopped") for vm_id in list(self._handles)),
            return_exceptions=True,
        )
        await asyncio.gather(
            *self._destroying.values(), *self.lifecycle.cleanups, return_exceptions=True
        )
        self.metrics.remove_on_scrape(self._scrape)

    def add_after_ready(self, hook: Callable[[Instance], Awaitable[None]]) -> None:
        """``hook(instance)`` runs on every VM once it is ready, before anyone gets it."""
        self.lifecycle.after_ready.append(hook)

    def add_before_destroy(self, hook: Hook) -> None:
        """``hook(handle)`` runs before a claimed VM is destroyed (bounded by HOOK_SECONDS)."""
        self.lifecycle.hooks.append(hook)

    # -- claiming ----------------------------------------------------------------------

    async def claim(self, role: VmRole, *, user_id: str | None = None) -> VmHandle:
        """A ready VM of ``role``: warm pool, then snapshot restore, then a cold start."""
        self._check_open()
        if user_id is not None:
            await self._check_user(user_id)
        started = time.monotonic()
        tried: list[dict[str, Any]] = []
        handle = await self._from_pool(role, user_id, tried)
        values: dict[str, Any] = {}
        if handle is not None:
            # One write makes the claim durable with its trace (a pool claim is ~ms).
            values = {"state": VmState.CLAIMED, "user_id": user_id, "last_used_at": utcnow()}
        else:
            handle = await self._restore_or_cold(role, user_id, tried)
        seconds = round(time.monotonic() - started, 4)
        handle.claimed_at = handle.last_used = time.monotonic()
        trace = {"origin": handle.origin, "tried": tried, "seconds": seconds}
        try:
            await self.store.update(
                handle.vm_id, timings={"claimSeconds": seconds}, claim_trace=trace, **values
            )
        except BaseException:
            # Claimed in memory only: nobody would ever release it.
            self.destroy_soon(handle, "its claim could not be recorded")
            raise
        self.metrics.vm_claimed(handle.origin, seconds)
        log.info(
            "claimed VM", extra={"vm_id": handle.vm_id, "role": role.value,
                                 "origin": handle.origin, "seconds": seconds},
        )  # fmt: skip
        return handle

    async def cli_vm(self, user_id: str) -> VmHandle:
        """The user's running CLI VM, or a newly claimed one (one at a time per user)."""
        lock = self._user_locks.get(user_id)
        if lock is None:
            lock = self._user_locks[user_id] = asyncio.Lock()
        async with lock:
            mine = [h for h in self._handles.values()
                    if h.role is VmRole.CLI and h.user_id == user_id]  # fmt: skip
            for handle in mine:
                if handle.state is VmState.CLAIMED:
                    return handle
            # One going away (idle, unhealthy) syncs its credentials back in its
            # before_destroy hooks: a new VM must not get them before that is done.
            going = [self._destroying[h.vm_id] for h in mine if h.vm_id in self._destroying]
            await asyncio.gather(*map(asyncio.shield, going), return_exceptions=True)
            return await self.claim(VmRole.CLI, user_id=user_id)

    def get(self, vm_id: str) -> VmHandle | None:
        handle = self._handles.get(vm_id)
        if handle is None or handle.state not in (VmState.READY, VmState.CLAIMED):
            return None
        return handle

    def handles(self) -> list[VmHandle]:
        """Every live handle (READY or CLAIMED)."""
        return [h for h in self._handles.values() if h.state in (VmState.READY, VmState.CLAIMED)]

    def pool_size(self, role: VmRole) -> int:
        return len(self._pool[role])

    async def touch(self, vm_id: str) -> None:
        handle = self._handles.get(vm_id)
        if handle is None:
            return  # gone already: nothing to keep alive
        handle.last_used = time.monotonic()
        await self.store.update(vm_id, last_used_at=utcnow())

    # -- destroying -------------------------------------------------------------------

    async def destroy(self, vm_id: str, reason: str) -> None:
        """Destroy a VM (hooks first if claimed); idempotent; the row says why and when."""
        if vm_id in self._launching:
            # Still starting: it is destroyed as soon as its start settles.
            ticket = self._launching[vm_id]
            ticket.doomed = reason
            await ticket.done.wait()
        task = self._destroying.get(vm_id)
        if task is None:
            handle = self._handles.get(vm_id)
            if handle is None:
                await self._end_row(vm_id, reason)
                return
            task = self.destroy_soon(handle, reason)
        await asyncio.shield(task)

    def destroy_soon(
        self, handle: VmHandle, reason: str, *, error: dict[str, Any] | None = None,
        cause: str | None = None,
    ) -> asyncio.Task[None]:  # fmt: skip
        """Start destroying ``handle`` in the background (the monitor does not wait for it)."""
        task = self._destroying.get(handle.vm_id)
        if task is None:
            task = asyncio.get_running_loop().create_task(
                self._destroy(handle, reason, error, cause), name=f"destroy {handle.vm_id}"
            )
            self._destroying[handle.vm_id] = task
            task.add_done_callback(partial(self._forget_destroy, handle.vm_id))
        return task

    def _forget_destroy(self, vm_id: str, task: asyncio.Task[None]) -> None:
        self._destroying.pop(vm_id, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("destroying VM %s failed: %s", vm_id, task.exception())

    async def _destroy(
        self, handle: VmHandle, reason: str, error: dict[str, Any] | None, cause: str | None
    ) -> None:
        was = handle.state
        handle.state = was.to(VmState.STOPPING, subject=f"VM {handle.vm_id}")
        with contextlib.suppress(ValueError):
            self._pool[handle.role].remove(handle.vm_id)
        self.pool.wake()
        try:
            await self.lifecycle.teardown(
                handle, reason, error, cause, run_hooks=was is VmState.CLAIMED
            )
        finally:
            self._handles.pop(handle.vm_id, None)

    async def _end_row(self, vm_id: str, reason: str) -> None:
        """A VM we hold no handle for: make sure its row says it ended (idempotent)."""
        row = await self.store.get(vm_id)
        if row is None or row.state in (VmState.STOPPED, VmState.FAILED):
            return
        await self.store.update(vm_id, VmState.STOPPED, stop_reason=reason, stopped_at=utcnow())

    # -- starting ------------------------------------------------------------------------

    async def _restore_or_cold(
        self, role: VmRole, user_id: str | None, tried: list[dict[str, Any]]
    ) -> VmHandle:
        snapshot = self.golden.current
        if snapshot is None:
            tried.append({"source": "restore", "result": "skipped", "reason": self.golden.reason})
        else:
            trace: dict[str, Any] = {"origin": "restore", "tried": [*tried]}
            try:
                handle = await self._tracked(
                    self._launch(role, "restore", user_id, True, trace, snapshot)
                )
            except RemoteCliError as exc:
                if self._closed:
                    raise
                # The failed VM's row keeps the evidence; the user still gets a VM.
                tried.append({"source": "restore", "result": "failed", "code": exc.code,
                              "detail": exc.message})  # fmt: skip
                self.golden.restore_failed(exc.message)
            else:
                self.golden.restore_worked()
                tried.append({"source": "restore", "result": "ok", "vmId": handle.vm_id})
                return handle
        tried.append({"source": "cold", "result": "started"})
        cold: dict[str, Any] = {"origin": "cold", "tried": tried}
        return await self._tracked(self._launch(role, "cold", user_id, True, cold))

    async def launch_for_pool(self, role: VmRole) -> VmHandle:
        """Start a VM for the warm pool (the pool filler calls this): restored when possible."""
        self._check_open()
        await self.golden.settled()  # a snapshot being made: restore from it, don't race it
        snapshot = self.golden.current
        try:
            handle = await self._tracked(self._launch(role, "pool", None, False, None, snapshot))
        except RemoteCliError as exc:
            if snapshot is None or self._closed:
                raise
            self.golden.restore_failed(exc.message)
            handle = await self._tracked(self._launch(role, "pool", None, False, None))
        self._pool[role].append(handle.vm_id)
        return handle

    async def _from_pool(
        self, role: VmRole, user_id: str | None, tried: list[dict[str, Any]]
    ) -> VmHandle | None:
        while self._pool[role]:
            vm_id = self._pool[role].popleft()
            handle = self._handles.get(vm_id)
            if handle is None or handle.state is not VmState.READY:
                continue
            # Before any await: no second claim takes it.
            handle.state = handle.state.to(VmState.CLAIMED, subject=f"VM {vm_id}")
            try:
                probe = await readiness_mod.probe_health(handle.instance.agent_endpoint, 2.0)
            except BaseException:  # the claimer was cancelled: the VM goes back, unused
                self._unclaim(handle)
                self._pool[role].appendleft(vm_id)
                raise
            if not probe.ok:
                tried.append({"source": "pool", "result": "dead", "vmId": vm_id,
                              "detail": probe.detail})  # fmt: skip
                error = {"code": "vm_unhealthy", "message": f"found dead when claimed: "
                         f"{probe.detail}"}  # fmt: skip
                self._unclaim(handle)  # it never served anyone: no hooks
                self.destroy_soon(handle, "found dead when claimed", error=error, cause="unhealthy")
                continue
            handle.user_id = user_id
            self.pool.wake()
            tried.append({"source": "pool", "result": "ok", "vmId": vm_id})
            return handle
        tried.append({"source": "pool", "result": "empty"})
        return None

    async def _launch(
        self, role: VmRole, origin: str, user_id: str | None, claimed: bool,
        trace: dict[str, Any] | None, snapshot: Snapshot | None = None,
    ) -> VmHandle:  # fmt: skip
        vm_id = new_id("vm")
        ticket = self._launching[vm_id] = StartTicket(doomed=STOPPING if self._closed else None)
        try:
            handle = await self.lifecycle.boot(
                vm_id,
                role,
                origin,
                user_id,
                claimed=claimed,
                trace=trace,
                ticket=ticket,
                snapshot=snapshot,
            )
        finally:
            del self._launching[vm_id]
            ticket.done.set()
        self._handles[vm_id] = handle
        return handle

    # -- helpers ---------------------------------------------------------------------------

    @staticmethod
    def _unclaim(handle: VmHandle) -> None:
        """Undo a pool claim nobody used (READY again), unless it is being destroyed meanwhile
        (STOPPING stays: a destroy is never undone)."""
        if handle.state is VmState.CLAIMED:
            handle.state = handle.state.to(VmState.READY, subject=f"VM {handle.vm_id}")

    def register(self, handle: VmHandle) -> None:
        """Take a handle (reconcile adopts running VMs); a READY one goes to the pool."""
        self._handles[handle.vm_id] = handle
        if handle.state is VmState.READY:
            self._pool[handle.role].append(handle.vm_id)

    def _check_open(self) -> None:
        if self._closed:
            raise Unavailable("the controller is stopping; try again", code="shutting_down")

    async def _check_user(self, user_id: str) -> None:
        async with self.context.sessions() as session:
            if await session.get(User, user_id) is None:
                raise NotFound(f"no user {user_id!r}", code="unknown_user")

    async def _tracked(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` as a task ``stop()`` can cancel (a start must not outlive the manager)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return await task

    def _scrape(self, metrics: Metrics) -> None:
        counts = {(r, s): 0 for r in VmRole for s in VmState}
        for handle in self._handles.values():
            counts[(handle.role, handle.state)] += 1
        for (role, state), n in counts.items():
            metrics.vms.labels(role.value, state.value).set(n)
        for role in VmRole:
            metrics.pool_ready.labels(role.value).set(len(self._pool[role]))
            metrics.pool_target.labels(role.value).set(self.pool.targets.get(role, 0))


# -- the lifespan hooks ----------------------------------------------------------------------


async def start_service(
    context: AppContext,
    *,
    backend: Backend | None = None,
    image_rootfs: Path | None = None,
    deadlines: Deadlines | None = None,
    agent_env: Mapping[str, str] | None = None,
    pool_backoff: tuple[float, float] = (1.0, 60.0),
) -> None:
    """Choose the backend and image from the settings, start the manager, publish it.

    The keyword arguments are for tests and embedders (``functools.partial``).
    """
    reason = "given by the caller"
    stale: tuple[Backend, ...] = ()
    env = dict(agent_env if agent_env is not None else context.wiring.agent_env)
    if backend is None:
        runtime = await build_runtime(
            context.settings,
            guest_services=context.wiring.guest_services,
            fake_cli_dir=context.wiring.fake_cli_dir,
        )
        backend, reason, stale = runtime.backend, runtime.reason, runtime.stale
        image_rootfs = image_rootfs or runtime.image_rootfs
        env.update(runtime.agent_env)
    manager = VmManager(
        context, backend, image_rootfs or Path("/"), agent_env=env, deadlines=deadlines,
        stale_backends=stale, pool_backoff=pool_backoff,
    )  # fmt: skip
    manager.backend_reason = reason
    await manager.start()
    context.vm_manager = manager


async def stop_service(context: AppContext) -> None:
    manager, context.vm_manager = context.vm_manager, None
    if manager is not None:
        await manager.stop()
