"""One prompt run, from the user's CLI VM to the last SSE event, as a task of its own.

``ActiveRun.execute()`` does, in order:

1. setup — the vault record (409 ``not_connected`` / ``needs_login``), the
   user's CLI VM, the lease (409 ``credentials_busy``; a copy in another VM
   is synced back from there first), a ``PromptRun`` row, the credentials
   written into the VM unless it already holds them (or the API key passed
   along), and the agent's ``POST /prompts`` up to its ``run.started``;
2. the stream — the agent's normalized events go out as SSE; hang-up (or
   shutdown) sends ``DELETE /prompts/{id}`` to the agent and drains its
   last events;
3. the finish — changed files synced back as a new vault version, a
   refresh failure marks the credential ``needs_login`` (files kept), the
   lease released, the ``PromptRun`` row completed (never the prompt or the
   output), metrics, and a last ``done`` event.

The run is not the HTTP response's task: a client that hangs up must not
cut the sync-back short (``sse.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any, Protocol

from sqlalchemy.exc import SQLAlchemyError

from remotecli.agent import wire
from remotecli.agent.codec import to_json
from remotecli.controller.context import AppContext
from remotecli.controller.db.engine import retry_unavailable, session_scope
from remotecli.controller.db.models import PromptRun, User, new_id, utcnow
from remotecli.controller.errors import ApiError, NotFound, Unavailable, database_error
from remotecli.controller.fleet.manager import VmHandle
from remotecli.controller.fleet.monitor import Destroyer
from remotecli.controller.prompts.outcome import (
    AgentFailed,
    Outcome,
    RunSpec,
    check_usable,
    code_message,
    from_agent,
    login_again_message,
    public_error,
)
from remotecli.controller.prompts.states import RunStatus
from remotecli.controller.vault import credentials, leases, sync
from remotecli.controller.vault.leases import Claim
from remotecli.controller.vault.states import CredentialKind, CredentialState
from remotecli.errors import RemoteCliError
from remotecli.vmm.agentclient import AgentClient, AgentRequestError, AgentUnreachable
from remotecli.vmm.readiness import probe_health

log = logging.getLogger("remotecli.controller.prompts.service")

#: After a cancel, how long the agent gets to stop the CLI and say so.
CANCEL_DRAIN_SECONDS = 15.0
#: Beyond the run's own deadline (the agent enforces it): time to stop and report.
DEADLINE_GRACE_SECONDS = 30.0
#: Stored error messages are for operators; the full text went out in the stream.
MAX_STORED_MESSAGE = 1000
#: After a broken stream: one /health probe says whether the agent is gone.
LOST_PROBE_SECONDS = 2.0

Emit = Callable[[str, dict[str, Any]], None]


class RunFleet(Destroyer, Protocol):
    """The VMs a run reaches besides its own (``VmManager``): the previous holder of the
    credentials (``get``), and its own VM destroyed when its agent died."""

    def get(self, vm_id: str) -> VmHandle | None: ...


class RunHost(Protocol):
    """What a run needs from whoever runs it (``PromptService``): the context, the user's
    CLI VM counted as in use until ``done_with_vm``, the fleet and the metrics."""

    @property
    def context(self) -> AppContext: ...

    @property
    def vms(self) -> RunFleet: ...

    async def use_vm(self, user_id: str) -> VmHandle: ...

    def done_with_vm(self, vm_id: str) -> None: ...

    def record_metrics(self, provider: str, status: str, seconds: float) -> None: ...


class ActiveRun:
    def __init__(self, service: RunHost, spec: RunSpec, emit: Emit, *, report_setup: bool) -> None:
        self.service = service
        self.spec = spec
        self.emit = emit
        #: Perspectives report a failed setup as events; a single prompt raises it to the route.
        self.report_setup = report_setup
        self.id = new_id("run")
        self.status: RunStatus | None = None
        #: Resolves once streaming began (None) or setup failed (the error).
        self.started: asyncio.Future[BaseException | None] = (
            asyncio.get_running_loop().create_future()
        )
        self._cancelled = asyncio.Event()
        #: Set by whoever starts ``execute()`` (``PromptService.launch``).
        self.task: asyncio.Task[None] | None = None
        self._vm: VmHandle | None = None
        self._claim: Claim | None = None
        self._row_created = False
        self._agent_run_id: str | None = None
        self._deadline: asyncio.Timeout | None = None
        self._t0 = time.monotonic()
        self.outcome = Outcome()

    @property
    def recorded_id(self) -> str | None:
        """The run's id once it has a ``PromptRun`` row (a setup that failed early has none)."""
        return self.id if self._row_created else None

    def cancel(self) -> None:
        """Stop the run (client hang-up, shutdown); the finish still happens."""
        self._cancelled.set()

    # -- the whole run -----------------------------------------------------------

    async def execute(self) -> None:
        try:
            stream = await self._setup()
        except BaseException as exc:
            await self._abandon(exc)
            if not self.started.done():
                self.started.set_result(
                    Unavailable("the controller is stopping; try again", code="shutting_down")
                    if isinstance(exc, asyncio.CancelledError)
                    else exc
                )
            if self.report_setup and not isinstance(exc, asyncio.CancelledError):
                self.emit("error", public_error(exc))
                self.emit("done", {"runId": self.recorded_id, "status": RunStatus.FAILED.value})
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        self.started.set_result(None)
        try:
            await self._stream(stream)
        finally:
            await self._finish()

    # -- 1. setup ------------------------------------------------------------------

    async def _setup(self) -> AsyncGenerator[wire.RunEvent, None]:
        spec, context = self.spec, self.service.context
        async with context.sessions() as session:
            if await session.get(User, spec.user_id) is None:
                raise NotFound(f"no user {spec.user_id!r}", code="unknown_user")
            record = await credentials.current(session, spec.user_id, spec.provider)
            check_usable(spec, record)
            assert record is not None
            api_mode = record.kind is CredentialKind.API_KEY
            if not api_mode:
                # Cheap refusal before a VM is started for nothing; claim() decides for real.
                holder = await leases.busy_run(session, spec.user_id, spec.provider)
                if holder is not None:
                    raise leases.CredentialsBusy(
                        f"another prompt ({holder or 'unknown run'}) is using this user's "
                        f"{spec.provider} credentials; wait for it to finish and try again",
                        run_id=holder or None,
                    )
        self._vm = vm = await self.service.use_vm(spec.user_id)
        options = spec.options or {}
        ask = wire.RunPrompt(
            provider=spec.provider, prompt=spec.prompt, timeout_seconds=spec.timeout_seconds,
            options=wire.RunOptions(options.get("model"), options.get("permission"))
            if options else None,
        )  # fmt: skip
        if api_mode:
            await self._create_row()
            secret = credentials.open_secret(context.vault, record)
            ask = dataclasses.replace(ask, api_key=secret.api_key)
        else:
            self._claim = await leases.claim(
                context.sessions, user_id=spec.user_id, provider=spec.provider,
                vm_id=vm.vm_id, run_id=self.id, credential_version=record.version,
                run_seconds=spec.timeout_seconds,
            )  # fmt: skip
            await self._create_row()
            if self._claim.previous_vm_id is not None:
                await self._move_from(self._claim.previous_vm_id)
            async with context.sessions() as session:
                # Re-read: syncing the old copy back may have added a version.
                fresh = await credentials.current(session, spec.user_id, spec.provider)
            check_usable(spec, fresh)
            assert fresh is not None
            how = await sync.prepare(context, vm.agent, self._claim, fresh)
            log.info("credentials ready in the VM",
                     extra={"run_id": self.id, "vm_id": vm.vm_id, "provider": spec.provider,
                            "how": how, "version": fresh.version})  # fmt: skip
        stream = vm.agent.run(ask)
        try:
            first = await anext(stream)
        except AgentRequestError as exc:
            await stream.aclose()
            raise from_agent(exc) from exc
        except BaseException:
            await stream.aclose()
            raise
        if not isinstance(first, wire.RunStarted):
            await stream.aclose()
            raise AgentFailed("the agent's stream did not start with run.started")
        self._agent_run_id = first.run_id
        return stream

    async def _create_row(self) -> None:
        assert self._vm is not None
        async with session_scope(self.service.context.sessions) as session:
            session.add(
                PromptRun(id=self.id, user_id=self.spec.user_id, provider=self.spec.provider,
                          vm_id=self._vm.vm_id, group_id=self.spec.group_id,
                          status=RunStatus.RUNNING, created_at=utcnow())
            )  # fmt: skip
        self._row_created = True

    async def _move_from(self, old_vm_id: str) -> None:
        """The live copy is in another VM: sync it back from there, then take it over."""
        assert self._claim is not None
        old = self.service.vms.get(old_vm_id)
        if old is None:
            # Not ours (another controller's, or gone): the vault has what the
            # last run there synced back after it finished.
            log.info("the previous holder VM is not reachable from here; using the vault",
                     extra={"run_id": self.id, "vm_id": old_vm_id})  # fmt: skip
        else:
            try:
                await sync.sync_back(
                    self.service.context, old.agent, self.spec.user_id, self.spec.provider,
                    old_vm_id,
                )  # fmt: skip
            except RemoteCliError as exc:
                log.warning("could not sync back from the previous holder VM: %s", exc.code,
                            extra={"run_id": self.id, "vm_id": old_vm_id})  # fmt: skip
        async with session_scope(self.service.context.sessions) as session:
            await leases.move(session, self._claim)
        self._claim = dataclasses.replace(
            self._claim, previous_vm_id=None, content_version=None, credential_version=None
        )

    async def _abandon(self, exc: BaseException) -> None:
        """Setup failed: give back what it took, record why."""
        with contextlib.suppress(Exception):
            if self._claim is not None:
                await leases.release(self.service.context.sessions, self._claim)
        code, message = code_message(exc)
        self.status = RunStatus.FAILED
        with contextlib.suppress(Exception):
            if self._row_created:
                await self._complete_row(RunStatus.FAILED, (code, message))
        if self._vm is not None:
            self.service.done_with_vm(self._vm.vm_id)
        if not isinstance(exc, ApiError | asyncio.CancelledError):
            log.warning("prompt run setup failed: %s", code,
                        extra={"run_id": self.id, "provider": self.spec.provider})  # fmt: skip

    # -- 2. the stream -------------------------------------------------------------

    async def _stream(self, stream: AsyncGenerator[wire.RunEvent, None]) -> None:
        assert self._vm is not None
        vm = self._vm
        self.emit("run", {"runId": self.id, "vmId": vm.vm_id, "provider": self.spec.provider,
                          "groupId": self.spec.group_id})  # fmt: skip
        watcher = asyncio.create_task(self._cancel_in_agent(vm.agent))
        try:
            async with asyncio.timeout(self.spec.timeout_seconds + DEADLINE_GRACE_SECONDS) as dl:
                self._deadline = dl
                async for event in stream:
                    if self.outcome.observe(event):
                        # The SSE event is the agent's JSON of the event, key for key.
                        self.emit(event.type, to_json(event))
        except TimeoutError:
            if not self._cancelled.is_set():
                self._fail("timeout", f"the agent did not finish the run within "
                           f"{self.spec.timeout_seconds:.0f} s")  # fmt: skip
        except RemoteCliError as exc:
            code, message = code_message(exc)
            self._fail(code, f"lost the run in the VM: {message}")
            if isinstance(exc, AgentUnreachable):
                await self._destroy_if_dead(vm)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            with contextlib.suppress(Exception):
                await stream.aclose()  # hangs up: the agent stops what still runs

    async def _destroy_if_dead(self, vm: VmHandle) -> None:
        """The stream broke: a VM whose agent is gone is destroyed now, so the user's next
        prompt gets a new one (the health monitor takes interval x failures allowed, 30 s
        by default, and until then every prompt would be sent to the dead agent)."""
        probe = await probe_health(vm.instance.agent_endpoint, LOST_PROBE_SECONDS)
        if probe.ok:
            return
        message = f"the agent died during run {self.id}: {probe.detail}"
        log.error("VM %s lost its agent during a run: %s", vm.vm_id, probe.detail,
                  extra={"run_id": self.id})  # fmt: skip
        self.service.vms.destroy_soon(
            vm, f"unhealthy: {message}", error={"code": "vm_unhealthy", "message": message},
            cause="unhealthy",
        )  # fmt: skip

    def _fail(self, code: str, message: str) -> None:
        if self.outcome.error is None:
            self.outcome.error = (code, message)
        self.emit("error", {"type": "error", "code": code, "message": message})

    async def _cancel_in_agent(self, agent: AgentClient) -> None:
        await self._cancelled.wait()
        try:
            assert self._agent_run_id is not None  # set before the stream (and this) began
            await agent.cancel_run(self._agent_run_id, timeout=10.0)
        except AgentRequestError as exc:
            if exc.code != "unknown_run":  # it finished meanwhile: nothing to stop
                log.warning("the agent refused to cancel the run: %s", exc.code,
                            extra={"run_id": self.id})  # fmt: skip
        except AgentUnreachable:
            log.warning("the agent is unreachable; hanging up stops the run",
                        extra={"run_id": self.id})  # fmt: skip
        if self._deadline is not None:
            # Wait for the agent's last events (error "cancelled", run.finished),
            # but not forever: the stream is closed after this.
            loop = asyncio.get_running_loop()
            self._deadline.reschedule(loop.time() + CANCEL_DRAIN_SECONDS)

    # -- 3. the finish ---------------------------------------------------------------

    async def _finish(self) -> None:
        assert self._vm is not None
        out, spec, context = self.outcome, self.spec, self.service.context
        status = self.outcome.status(cancelled=self._cancelled.is_set())
        self.status = status
        stored: int | None = None
        try:
            if self._claim is not None:
                # Sync back when the agent said the files changed, or when we
                # never heard its verdict (a lost stream may hide a refresh).
                if out.credentials_changed or not out.finished:
                    stored = await self._sync_back()
                if out.login_again is not None:
                    async with session_scope(context.sessions) as session:
                        await credentials.mark_state(
                            session, spec.user_id, spec.provider, CredentialState.NEEDS_LOGIN
                        )
                    log.warning("the provider refused the stored sign-in: needs login",
                                extra={"run_id": self.id, "provider": spec.provider,
                                       "code": out.login_again})  # fmt: skip
                # Retried while the database is away: a lease left busy would refuse
                # this user's next runs until it lapses (the run's deadline + 2 min).
                claim = self._claim
                await retry_unavailable(
                    lambda: leases.release(context.sessions, claim), "release a lease",
                    extra={"run_id": self.id},
                )  # fmt: skip
            await retry_unavailable(
                lambda: self._complete_row(status, out.error), "record a run's end",
                extra={"run_id": self.id},
            )  # fmt: skip
        finally:
            self.service.done_with_vm(self._vm.vm_id)
            seconds = time.monotonic() - self._t0
            self.service.record_metrics(spec.provider, status.value, seconds)
            if out.login_again is not None:
                message = login_again_message(spec, out.login_again)
                self.emit("error", {"type": "error", "code": "needs_login", "message": message})
            error = out.error
            self.emit("done", {
                "runId": self.id, "status": status.value, "exitCode": out.exit_code,
                "durationMs": round(seconds * 1000, 1),
                "vmDurationMs": out.agent_duration_ms,
                "error": {"code": error[0], "message": error[1]} if error else None,
                "credentialsChanged": bool(out.credentials_changed),
                "credentialsVersion": stored,
                "usage": out.usage, "costUsd": out.cost_usd,
            })  # fmt: skip
            log.info("prompt run finished",
                     extra={"run_id": self.id, "provider": spec.provider, "status": status.value,
                            "exit_code": out.exit_code, "seconds": round(seconds, 3)})  # fmt: skip

    async def _sync_back(self) -> int | None:
        assert self._vm is not None and self._claim is not None
        try:
            outcome = await sync.sync_back(
                self.service.context, self._vm.agent, self.spec.user_id, self.spec.provider,
                self._vm.vm_id,
            )  # fmt: skip
        except (RemoteCliError, SQLAlchemyError) as exc:
            # The VM keeps the lease, so its copy is synced on the next run or
            # before it goes away (sync.prepare stores unsynced changes first).
            failure = database_error(exc) if isinstance(exc, SQLAlchemyError) else exc
            if failure is None:
                raise
            log.warning("sync-back after the run failed: %s", failure.code,
                        extra={"run_id": self.id, "provider": self.spec.provider})  # fmt: skip
            return None
        return outcome.stored

    async def _complete_row(self, status: RunStatus, error: tuple[str, str] | None) -> None:
        out = self.outcome
        async with session_scope(self.service.context.sessions) as session:
            row = await session.get(PromptRun, self.id, with_for_update=True)
            if row is None:
                return  # deleted with its user meanwhile: nothing to complete
            row.status = row.status.to(status, subject=f"prompt run {self.id}")
            row.exit_code = out.exit_code
            row.error_code = error[0] if error else None
            row.error_message = error[1][:MAX_STORED_MESSAGE] if error else None
            row.usage = out.usage
            row.cost_usd = None if out.cost_usd is None else f"{out.cost_usd:.6f}"
            row.finished_at = utcnow()
