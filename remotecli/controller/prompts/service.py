"""Prompt runs as a service: the runs in flight, CLI VMs going idle, credentials leaving VMs.

``context.prompt_service`` is a ``PromptService``, started by
``start_service`` after the VM manager (it needs ``context.vms()``):

- ``launch()`` starts one run (``prompt_run.ActiveRun``) as a task and
  ``perspectives()`` several side by side; their events go to an SSE
  channel (``sse.py``). The runs outlive a client that hangs up.
- Before any VM goes away (idle stop, health replacement, admin delete,
  shutdown) the VM manager calls ``before_destroy``: every lease that VM
  holds is synced back to the vault and released, so the next prompt, in a
  new VM, gets the live refresh token.
- An idle stopper destroys CLI VMs no run used for
  ``settings.cli_vm_idle_seconds``; the next prompt gets a new one from
  ``VmManager.cli_vm`` (which restores from snapshot where the backend can).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from typing import Any

from sqlalchemy import select, update

from remotecli.controller.context import AppContext
from remotecli.controller.db.engine import session_scope
from remotecli.controller.db.models import Lease, PromptRun, User, Vm, new_id, utcnow
from remotecli.controller.errors import NotFound, Unavailable
from remotecli.controller.fleet.manager import VmHandle, VmManager
from remotecli.controller.fleet.monitor import destroy_vmm_exited
from remotecli.controller.fleet.states import VmRole, VmState
from remotecli.controller.fleet.store import LIVE_STATES
from remotecli.controller.prompts.outcome import RunSpec
from remotecli.controller.prompts.run import ActiveRun, Emit
from remotecli.controller.prompts.states import RunStatus
from remotecli.controller.sse import Channel
from remotecli.controller.vault import leases, sync
from remotecli.errors import RemoteCliError

log = logging.getLogger("remotecli.controller.prompts.service")

#: How long shutdown waits for runs to cancel, drain and sync back.
STOP_SECONDS = 20.0


class PromptService:
    def __init__(self, context: AppContext, vms: VmManager) -> None:
        self.context = context
        self.vms = vms
        self.idle_seconds = context.settings.cli_vm_idle_seconds
        self._runs: dict[str, ActiveRun] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        #: Runs using each VM now: the idle stopper leaves those alone.
        self._in_use: collections.Counter[str] = collections.Counter()
        #: VMs the idle stopper is destroying; set when they are gone.
        self._stopping: dict[str, asyncio.Event] = {}
        self._idle_task: asyncio.Task[None] | None = None

    # -- lifespan ------------------------------------------------------------------

    async def start(self) -> None:
        self.vms.add_before_destroy(self.before_destroy)
        await self.recover()
        self._idle_task = asyncio.create_task(self._idle_loop(), name="prompts-idle-stopper")

    async def stop(self) -> None:
        if self._idle_task is not None:
            self._idle_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._idle_task
        for run in list(self._runs.values()):
            run.cancel()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=STOP_SECONDS)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def recover(self) -> None:
        """After a crash: end the runs this controller lost, free the leases they held.

        The VM manager has reconciled already: a VM that died with us is
        STOPPED, one that survived is ours again (adopted). A run still
        RUNNING on either was cut off (its stream died with us, and the agent
        stops a run whose client hangs up). Leases on a VM that is gone are
        dropped (the vault keeps what the last sync-back stored); on an
        adopted VM the copy is synced back first, then the lease released.
        Runs on another controller's live VMs are left alone.
        """
        mine = {h.vm_id: h for h in self.vms.handles()}
        async with session_scope(self.context.sessions) as session:
            live = set((await session.execute(
                select(Vm.id).where(Vm.state.in_(LIVE_STATES))
            )).scalars())  # fmt: skip
            lost = (await session.execute(
                select(PromptRun).where(PromptRun.status == RunStatus.RUNNING)
            )).scalars().all()  # fmt: skip
            interrupted = 0
            for run in lost:
                if run.vm_id in mine or run.vm_id not in live:
                    interrupted += 1
                    run.status = run.status.to(RunStatus.FAILED, subject=f"prompt run {run.id}")
                    run.error_code = "interrupted"
                    run.error_message = "the controller stopped during the run"
                    run.finished_at = utcnow()
            held = (await session.execute(select(Lease))).scalars().all()
            orphaned = [lease for lease in held if lease.vm_id not in live]
            for lease in orphaned:
                await leases.drop(session, lease)
            adopted = [(lease.user_id, lease.provider, lease.vm_id)
                       for lease in held if lease.vm_id in mine]  # fmt: skip
        for user_id, provider, vm_id in adopted:
            try:
                await sync.sync_back(self.context, mine[vm_id].agent, user_id, provider, vm_id)
            except RemoteCliError as exc:
                log.warning("could not sync back from an adopted VM: %s", exc.code,
                            extra={"vm_id": vm_id, "provider": provider})  # fmt: skip
            async with session_scope(self.context.sessions) as session:
                await session.execute(
                    update(Lease)
                    .where(Lease.user_id == user_id, Lease.provider == provider,
                           Lease.vm_id == vm_id)
                    .values(run_id=None, busy_until=None)
                )  # fmt: skip
        if interrupted or orphaned:
            counts = {"runs_interrupted": interrupted, "leases_dropped": len(orphaned)}
            log.info("recovered after a restart", extra=counts)

    # -- runs ----------------------------------------------------------------------

    def launch(self, spec: RunSpec, emit: Emit, *, report_setup: bool = False) -> ActiveRun:
        run = ActiveRun(self, spec, emit, report_setup=report_setup)
        self._runs[run.id] = run
        run.task = asyncio.create_task(run.execute(), name=f"prompt-{run.id}")
        self._track(run.task)
        run.task.add_done_callback(lambda _t: self._runs.pop(run.id, None))
        return run

    def perspectives(self, specs: list[RunSpec], channel: Channel) -> list[ActiveRun]:
        """Run ``specs`` side by side into one channel, each event tagged with its provider."""
        runs = [self.launch(spec, _tagged(channel, spec.provider), report_setup=True)
                for spec in specs]  # fmt: skip

        async def close_when_done() -> None:
            await asyncio.gather(*(r.task for r in runs if r.task), return_exceptions=True)
            channel.emit("end", {
                "groupId": specs[0].group_id,
                "runs": [{"provider": s.provider, "runId": r.recorded_id,
                          "status": r.status.value if r.status else "failed"}
                         for s, r in zip(specs, runs, strict=True)],
            })  # fmt: skip
            channel.close()

        self._track(asyncio.create_task(close_when_done()))
        return runs

    def _track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def new_group_id(self) -> str:
        return new_id("grp")

    async def require_user(self, user_id: str) -> None:
        async with self.context.sessions() as session:
            if await session.get(User, user_id) is None:
                raise NotFound(f"no user {user_id!r}", code="unknown_user")

    # -- VMs -------------------------------------------------------------------------

    async def use_vm(self, user_id: str) -> VmHandle:
        """The user's CLI VM, counted as in use until ``done_with_vm``."""
        for _ in range(3):
            handle = await self.vms.cli_vm(user_id)
            if (code := handle.instance.exit_code()) is not None:
                # It died since its last run: the monitor would take interval x failures
                # allowed to notice, and every prompt until then would fail on it.
                await destroy_vmm_exited(self.vms, handle, code)
                continue
            stopping = self._stopping.get(handle.vm_id)
            if stopping is None:
                # No await between the check and the count: the idle stopper
                # (same event loop) sees either "in use" or nothing.
                self._in_use[handle.vm_id] += 1
                await self.vms.touch(handle.vm_id)
                return handle
            await stopping.wait()  # it is going away: ask for the user's next VM
        raise Unavailable(
            "the user's CLI VM kept stopping while a prompt started; try again",
            code="vm_unavailable",
        )

    def done_with_vm(self, vm_id: str) -> None:
        self._in_use[vm_id] -= 1
        if self._in_use[vm_id] <= 0:
            del self._in_use[vm_id]
        # The idle clock starts when the last run ends, not when it started.
        self._track(asyncio.create_task(self.vms.touch(vm_id)))

    async def before_destroy(self, handle: VmHandle) -> None:
        """Sync back every copy of credentials ``handle`` holds, then release the leases."""
        async with self.context.sessions() as session:
            held = await leases.held_by(session, handle.vm_id)
        for lease in held:
            try:
                outcome = await sync.sync_back(
                    self.context, handle.agent, lease.user_id, lease.provider, handle.vm_id
                )
            except RemoteCliError as exc:
                # The vault keeps what the last run synced back after it finished.
                log.warning("could not sync credentials back before the VM goes: %s", exc.code,
                            extra={"vm_id": handle.vm_id, "provider": lease.provider})  # fmt: skip
            else:
                log.info("synced credentials back before the VM goes",
                         extra={"vm_id": handle.vm_id, "provider": lease.provider,
                                "stored": outcome.stored})  # fmt: skip
            async with session_scope(self.context.sessions) as session:
                await leases.drop(session, lease)

    async def _idle_loop(self) -> None:
        # A quarter of the TTL keeps the overshoot small; 30 s caps the polling
        # of a long TTL; tests run with TTLs of a second.
        interval = min(max(self.idle_seconds / 4, 0.1), 30.0)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.stop_idle()
            except Exception:
                log.exception("the idle CLI VM stopper failed; retrying")

    async def stop_idle(self) -> list[str]:
        """Destroy the CLI VMs no run used for ``idle_seconds``; return their ids.

        ``handle.last_used`` is the manager's clock (claim, adoption after a
        restart, ``touch`` at the start and end of every run).
        """
        now = time.monotonic()
        idle = [h.vm_id for h in self.vms.handles()
                if h.role is VmRole.CLI and h.state is VmState.CLAIMED
                and now - h.last_used >= self.idle_seconds]  # fmt: skip
        stopped = []
        for vm_id in idle:
            if self._in_use.get(vm_id) or vm_id in self._stopping:
                continue  # a run took it meanwhile, or it is going already
            gone = self._stopping[vm_id] = asyncio.Event()
            try:
                await self.vms.destroy(vm_id, f"idle for more than {self.idle_seconds:g} s")
                stopped.append(vm_id)
            finally:
                del self._stopping[vm_id]
                gone.set()
        if stopped:
            log.info("stopped idle CLI VMs", extra={"vm_ids": stopped})
        return stopped

    # -- metrics ---------------------------------------------------------------------

    def record_metrics(self, provider: str, status: str, seconds: float) -> None:
        self.context.metrics.run_finished(provider, status, seconds)


def _tagged(channel: Channel, provider: str) -> Emit:
    def emit(event: str, data: dict[str, Any]) -> None:
        channel.emit(event, {**data, "provider": provider})

    return emit


async def start_service(context: AppContext) -> None:
    """Lifespan hook; after the VM manager's ``start_service``."""
    service = PromptService(context, context.vms())
    context.prompt_service = service
    await service.start()


async def stop_service(context: AppContext) -> None:
    service, context.prompt_service = context.prompt_service, None
    if service is not None:
        await service.stop()
