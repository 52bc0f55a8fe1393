"""Drive one login from the claimed VM to the vault: the seed's steps 2-7 and 12-13.

One task per session (``LoginDriver.drive``) claims an auth VM, starts the
CLI's login in its agent, records the URL, follows the agent until the
login ends, captures the credential files into the vault and destroys the
VM. Every way out — success, the agent's failure, the deadline, a lost VM, a
cancel, a bug — goes through ``finish``: it destroys the VM, records why and
wakes the followers, exactly once. The code relay (step 11) is in
``flow.py``; both go through ``Live``'s own methods (``session.py``), which take its lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from remotecli.agent import wire
from remotecli.agent.codec import to_json
from remotecli.controller.auth.session import Live, SessionRows
from remotecli.controller.auth.states import AuthPhase
from remotecli.controller.auth.view import AGENT_PHASES
from remotecli.controller.context import AppContext
from remotecli.controller.db.engine import retry_unavailable, session_scope
from remotecli.controller.errors import database_error
from remotecli.controller.fleet.manager import VmHandle, VmManager
from remotecli.controller.fleet.states import VmRole
from remotecli.controller.vault import credentials
from remotecli.errors import NotReady, RemoteCliError
from remotecli.providers.base import LoginMode
from remotecli.vmm.agentclient import WAIT_SLACK_SECONDS, AgentRequestError, AgentUnreachable

log = logging.getLogger("remotecli.controller.auth")

#: What one long-poll of a login answers (its link, or its status).
Polled = TypeVar("Polled", wire.LoginUrl, wire.LoginStatus)

#: How long the agent waits for the CLI's URL before answering the start
#: (Gemini, the slowest, prints it ~1.4 s after spawn; a loaded host is slower).
START_WAIT_SECONDS = 20.0
#: One long-poll of the agent's login status (the agent caps waits at 30 s).
POLL_SECONDS = 25.0
#: Transport slack on top of a long-poll's own wait (the client's).
HTTP_SLACK_SECONDS = WAIT_SLACK_SECONDS
#: Consecutive failed polls (1 s apart) before the VM counts as lost.
AGENT_MISSES_ALLOWED = 3
#: Attempts to store captured files when a concurrent store took the version number.
STORE_ATTEMPTS = 3


class LoginStopped(Exception):
    """Internal: the login cannot go on; ``finish`` records this."""

    def __init__(
        self, phase: AuthPhase, code: str, message: str, detail: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.phase, self.code, self.message, self.detail = phase, code, message, detail


class LoginDriver:
    def __init__(self, context: AppContext, rows: SessionRows, live: dict[str, Live]) -> None:
        self.context = context
        self.rows = rows
        self.live = live
        #: Teardowns in progress (shielded from the cancellation of their caller).
        self.endings: set[asyncio.Task[None]] = set()
        #: The service is stopping: a teardown stops retrying its row write.
        self.closing = False

    # -- the task ---------------------------------------------------------------

    async def drive(self, live: Live, vms: VmManager) -> None:
        try:
            try:
                async with asyncio.timeout(max(0.0, live.remaining())):
                    await self._login(live, vms)
            except TimeoutError:
                raise LoginStopped(
                    AuthPhase.EXPIRED,
                    "login_expired",
                    f"no login completed within "
                    f"{self.context.settings.auth_session_seconds:.0f} s; start a new one",
                ) from None
            await self._capture(live)
            await self.finish(live, AuthPhase.AUTHENTICATED)
        except LoginStopped as stop:
            await self.finish(live, stop.phase, stop.code, stop.message, stop.detail)
        except asyncio.CancelledError:
            raise  # whoever cancelled the task finishes the session
        except SQLAlchemyError as exc:
            # The database down or its disk full mid-login (storing the files, a phase):
            # the session ends saying so, and its VM goes.
            if (stored := database_error(exc)) is None:
                raise
            log.warning("login stopped by the database: %s", stored.code,
                        extra={"auth_session": live.id})  # fmt: skip
            await self.finish(
                live, AuthPhase.FAILED, stored.code, f"{stored.message}; then start a new login"
            )
        except Exception:
            # A bug or an error nobody foresaw: the session must still end and its VM go.
            log.exception("login driver failed", extra={"auth_session": live.id})
            await self.finish(
                live,
                AuthPhase.FAILED,
                "internal_error",
                "the controller failed during this login (its log says why); start a new login",
            )
        finally:
            live.started.set()

    async def _login(self, live: Live, vms: VmManager) -> None:
        """Claim, start, follow; returns when the agent says authenticated."""
        vm = await self._claim(live, vms)
        await self.rows.update(
            live,
            phase=AuthPhase.STARTING_LOGIN,
            vm_id=vm.vm_id,
            timings={"claimMs": live.ms(), "vmOrigin": vm.origin},
        )
        try:
            started = await vm.agent.start_login(
                live.provider, LoginMode(live.mode), wait_seconds=START_WAIT_SECONDS
            )
        except (AgentRequestError, AgentUnreachable) as exc:
            raise LoginStopped(
                AuthPhase.FAILED,
                exc.code,
                f"the login VM could not start the {live.provider} login: {exc.message}",
            ) from exc
        live.agent_session = started.session_id
        await self.mirror(live, started)
        status: wire.Session | wire.LoginUrl | wire.LoginStatus = started
        if started.oauth_url is None and not started.phase.ended:
            status = await self._wait_url(live, vm)
        live.started.set()
        if not status.phase.ended:
            status = await self._follow(live, vm)
        phase = AGENT_PHASES[status.phase]
        if phase is not AuthPhase.CAPTURING:
            error = status.error
            raise LoginStopped(
                phase if phase.ended else AuthPhase.FAILED,
                (error.code if error else None) or "login_failed",
                (error.message if error else None) or f"the login ended {status.phase.value}",
            )
        # Past this point the deadline no longer applies: the user signed in.
        live.capturing = True

    async def _claim(self, live: Live, vms: VmManager) -> VmHandle:
        claim = asyncio.ensure_future(vms.claim(VmRole.AUTH))
        try:
            # Shielded: a cancel during the claim must not leave a half-claimed VM
            # that nobody destroys; the callback below destroys it when it arrives.
            vm = await asyncio.shield(claim)
        except NotReady as exc:
            raise LoginStopped(AuthPhase.FAILED, exc.code, exc.message, exc.to_dict()) from exc
        except RemoteCliError as exc:
            raise LoginStopped(AuthPhase.FAILED, exc.code, exc.message, exc.to_dict()) from exc
        except asyncio.CancelledError:
            claim.add_done_callback(lambda done: self._destroy_late(done, vms, live.id))
            raise
        live.vm = vm
        return vm

    def _destroy_late(
        self, claim: asyncio.Future[VmHandle], vms: VmManager, session_id: str
    ) -> None:
        if claim.cancelled() or claim.exception() is not None:
            return
        vm_id = claim.result().vm_id
        task = asyncio.create_task(vms.destroy(vm_id, f"auth session {session_id} ended"))
        self.endings.add(task)
        task.add_done_callback(self.endings.discard)

    async def _wait_url(self, live: Live, vm: VmHandle) -> wire.LoginUrl:
        """The CLI had not printed its URL when the start answered: wait for it."""
        while True:
            view = await self._poll(live, lambda sid: vm.agent.login_url(sid, wait=POLL_SECONDS))
            await self.mirror(live, view)
            if view.oauth_url is not None or view.phase.ended:
                return view

    async def _follow(self, live: Live, vm: VmHandle) -> wire.LoginStatus:
        """Long-poll the agent until the login ends (the user signs in elsewhere)."""
        while True:
            status = await self._poll(
                live, lambda sid: vm.agent.login_status(sid, wait=POLL_SECONDS)
            )
            if status.phase.ended:
                return status
            row = await self.rows.load(live.id)
            phase = AGENT_PHASES[status.phase]
            if live.answering or row is None or phase is row.phase:
                continue
            # Changed after the relay answered (e.g. a code refused late): read the
            # whole login, for the new URL and the reason, not just the phase.
            with contextlib.suppress(AgentRequestError, AgentUnreachable):
                await self.mirror(live, await vm.agent.login(status.session_id))

    async def _poll(self, live: Live, ask: Callable[[str], Awaitable[Polled]]) -> Polled:
        """One long-poll of the agent about this login, retried while the agent is away."""
        assert live.agent_session is not None
        misses = 0
        while True:
            try:
                return await ask(live.agent_session)
            except AgentUnreachable as exc:
                misses += 1
                if misses > AGENT_MISSES_ALLOWED:
                    raise LoginStopped(
                        AuthPhase.FAILED,
                        "vm_lost",
                        f"lost the login VM's agent ({exc.message}); start a new login",
                    ) from exc
                await asyncio.sleep(1.0)
            except AgentRequestError as exc:
                raise LoginStopped(
                    AuthPhase.FAILED,
                    exc.code,
                    f"the login VM's agent refused to report the login: {exc.message}",
                ) from exc

    async def mirror(self, live: Live, agent: wire.Session | wire.LoginUrl) -> None:
        """Copy what the agent says of a login in progress (URL, code, phase, error) to the row."""
        fields: dict[str, Any] = {}
        timings: dict[str, Any] = {}
        if agent.oauth_url is not None:
            fields["login_url"] = agent.oauth_url
            timings.setdefault("urlMs", live.ms())
        fields["user_code"] = agent.user_code
        if agent.instructions is not None:
            fields["instructions"] = agent.instructions
        expires: str | None = None
        if isinstance(agent, wire.Session):
            # Only the whole login says when the CLI printed its URL and when it expires.
            if "urlMs" in agent.timings:
                timings["agentUrlMs"] = agent.timings["urlMs"]
            expires = agent.expires_at
        phase: AuthPhase | None = AGENT_PHASES[agent.phase]
        error = agent.error
        if phase in (AuthPhase.AWAITING_USER, AuthPhase.VERIFYING):
            # e.g. code_rejected: the user may try again, so the session goes on.
            fields["error_code"] = error.code if error else None
            fields["error_message"] = error.message if error else None
        else:
            phase = None  # endings are recorded by finish(), "authenticated" by the driver
        async with live.writing() as in_progress:
            if not in_progress:
                return
            row = await self.rows.load(live.id)
            if row is None:
                return
            if "urlMs" in timings and "urlMs" in (row.timings or {}):
                del timings["urlMs"]  # the first URL is the click-to-URL time
            if expires is not None:
                # The agent may have a shorter deadline (Gemini: 5 min): show the earlier one.
                with contextlib.suppress(ValueError):
                    theirs = datetime.fromisoformat(expires.replace("Z", "+00:00"))
                    ours = row.expires_at
                    if ours.tzinfo is None:
                        ours = ours.replace(tzinfo=theirs.tzinfo)
                    if theirs < ours:
                        fields["expires_at"] = theirs
            if phase is row.phase:
                phase = None
            await self.rows.write(live.id, phase=phase, timings=timings, **fields)

    async def _capture(self, live: Live) -> None:
        """Steps 12-13: read the files the CLI wrote and store them as a new vault version."""
        assert live.vm is not None
        await self.rows.update(
            live, phase=AuthPhase.CAPTURING, timings={"authenticatedMs": live.ms()}
        )
        try:
            captured = await live.vm.agent.read_credentials(live.provider)
        except (AgentRequestError, AgentUnreachable) as exc:
            raise LoginStopped(
                AuthPhase.FAILED,
                "capture_failed",
                f"signed in, but the credential files could not be read: {exc.message}; "
                "start a new login",
            ) from exc
        for attempt in range(STORE_ATTEMPTS):
            try:
                async with session_scope(self.context.sessions) as session:
                    record = await credentials.store_files(
                        session, self.context.vault, live.user_id, live.provider, to_json(captured)
                    )
                break
            except credentials.CaptureError as exc:
                raise LoginStopped(AuthPhase.FAILED, exc.code, exc.message) from exc
            except IntegrityError:
                if attempt == STORE_ATTEMPTS - 1:
                    raise
        await self.rows.update(live, timings={"capturedMs": live.ms()})
        log.info(
            "login captured",
            extra={
                "auth_session": live.id,
                "provider": live.provider,
                "credential_version": record.version,
            },
        )

    # -- the one way out ------------------------------------------------------

    async def finish(
        self,
        live: Live,
        phase: AuthPhase,
        code: str | None = None,
        message: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """End the session once: stop the agent's login, destroy the VM, record the outcome.

        The work runs in its own task, shielded: a cancel of the caller (a
        client hanging up, the service stopping) must not leave a VM behind.
        """
        if not await live.finish():
            return
        task = asyncio.create_task(self._teardown(live, phase, code, message, detail))
        self.endings.add(task)
        task.add_done_callback(self.endings.discard)
        await asyncio.shield(task)

    async def _teardown(
        self,
        live: Live,
        phase: AuthPhase,
        code: str | None,
        message: str | None,
        detail: dict[str, Any] | None,
    ) -> None:
        vms: VmManager | None = self.context.vm_manager
        try:
            if live.vm is not None and vms is not None:
                if phase in (AuthPhase.CANCELLED, AuthPhase.EXPIRED) and live.agent_session:
                    # Stop the CLI first so it cannot finish a login nobody will capture.
                    with contextlib.suppress(RemoteCliError):
                        await live.vm.agent.cancel_login(live.agent_session, timeout=10.0)
                try:
                    await vms.destroy(live.vm.vm_id, f"auth session {live.id} {phase.value}")
                except Exception:  # the VM manager records what was left behind
                    log.exception(
                        "destroying the auth VM failed",
                        extra={"auth_session": live.id, "vm_id": live.vm.vm_id},
                    )
            await self._record_end(
                live,
                phase=phase,
                error_code=code,
                error_message=message,
                error_detail=detail,
                timings={"endedMs": live.ms()},
            )
        finally:
            self.live.pop(live.id, None)
            live.ended.set()
            live.started.set()
            self.rows.notify(live.id)
        self.context.metrics.login_finished(live.provider, phase.value, live.ms() / 1000)
        log.info(
            "login ended",
            extra={
                "auth_session": live.id,
                "provider": live.provider,
                "mode": live.mode,
                "phase": phase.value,
                "code": code,
                "ms": live.ms(),
            },
        )

    async def _record_end(self, live: Live, **fields: Any) -> None:
        """The session's final row write, retried while the database is away or full.

        Given up on only when the controller stops (its next start ends the row
        as ``controller_restarted``): a session left open would be followed forever.
        """
        await retry_unavailable(
            lambda: self.rows.write(live.id, **fields), "record the end of a login",
            give_up=lambda: self.closing, extra={"auth_session": live.id},
        )  # fmt: skip
