"""The login flow's operations, behind ``/api/auth/...``: start, follow, relay the code, cancel.

``AuthFlows`` is ``context.auth_flows`` (``start_service``). A
start checks everything it can before anything is written (provider, mode,
key, who may act for whom), then either stores an API key at once (no VM)
or creates the session and hands it to ``LoginDriver`` (``auth_driver.py``),
one task per login, and answers when the login URL is known — or with the
structured reason it never will be (a VM that did not get ready: 503 with
the readiness evidence).

Who may see what: the caller must be allowed to act for the session's user
(``Principal.can_act_for``). Another user's session answers exactly like a
session that does not exist (404 ``unknown_session``), so ids are no oracle.
A service token (the web product's backend) may start a login for a user
the controller has not seen yet: the user is created, as the seed's
``{"userId", "provider"}`` request expects; other tokens need an existing user.

Secrets (the pasted code, the callback URL, API keys) go to the agent or the
vault and nowhere else: not into logs, rows, errors or answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Coroutine
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from remotecli.agent.wire import LoginPhase
from remotecli.controller.auth.checks import (
    relay_error,
    resolve_mode,
    resolve_provider,
    start_failed,
)
from remotecli.controller.auth.driver import LoginDriver
from remotecli.controller.auth.schemas import AuthSessionOut, AuthStart, CodeSubmit
from remotecli.controller.auth.session import Live, SessionRows
from remotecli.controller.auth.states import AuthPhase
from remotecli.controller.auth.view import session_out
from remotecli.controller.context import AppContext
from remotecli.controller.db.engine import session_scope
from remotecli.controller.db.models import AuthSession, TokenKind, User, utcnow
from remotecli.controller.errors import BadGateway, BadRequest, Conflict, NotFound
from remotecli.controller.fleet.manager import VmManager
from remotecli.controller.security import Principal
from remotecli.controller.sse import encode
from remotecli.controller.vault import credentials
from remotecli.providers.base import LoginMode
from remotecli.vmm.agentclient import AgentRequestError, AgentUnreachable

log = logging.getLogger("remotecli.controller.auth")

#: How long the agent waits for the CLI's verdict on a pasted code.
CODE_WAIT_SECONDS = 15.0
#: After the agent accepted a code: how long the relay waits for the capture,
#: so its answer can already say "authenticated".
SETTLE_SECONDS = 20.0
#: Proxies drop connections silent for ~60 s.
HEARTBEAT_SECONDS = 15.0


class AuthFlows:
    def __init__(self, context: AppContext) -> None:
        self.context = context
        self.rows = SessionRows(context.sessions)
        self.live: dict[str, Live] = {}
        self.driver = LoginDriver(context, self.rows, self.live)
        self.heartbeat_seconds = HEARTBEAT_SECONDS
        self._background: set[asyncio.Task[None]] = set()

    # -- start ------------------------------------------------------------------

    async def start(self, caller: Principal, body: AuthStart) -> AuthSessionOut:
        clicked = time.monotonic()
        caller.require_user(body.user_id)
        provider = resolve_provider(body.provider)
        mode = resolve_mode(provider, body.mode, body.api_key is not None)
        api_key = body.api_key.get_secret_value() if body.api_key is not None else None
        if mode is LoginMode.API_KEY:
            try:
                api_key = credentials.check_api_key(api_key)
            except ValueError as exc:
                raise BadRequest(str(exc), code="invalid_api_key") from None
        vms = self._vms() if mode is not LoginMode.API_KEY else None
        await self._ensure_user(caller, body.user_id)
        self._supersede(body.user_id, provider.name)
        if mode is LoginMode.API_KEY:
            assert api_key is not None
            return await self._store_key(body.user_id, provider.name, api_key, clicked)
        assert vms is not None
        seconds = self.context.settings.auth_session_seconds
        row = AuthSession(
            user_id=body.user_id,
            provider=provider.name,
            mode=mode.value,
            phase=AuthPhase.CLAIMING_VM,
            timings={},
            expires_at=utcnow() + timedelta(seconds=seconds),
        )
        await self.rows.add(row)
        live = Live(row.id, body.user_id, provider.name, mode.value, clicked, clicked + seconds)
        self.live[row.id] = live
        live.task = asyncio.create_task(self.driver.drive(live, vms), name=f"login-{row.id}")
        # The task goes on if this request is dropped; the caller can follow the id.
        await live.started.wait()
        current = await self._row(row.id)
        if current.phase is AuthPhase.FAILED:
            raise start_failed(current)
        return session_out(current)

    async def _store_key(
        self, user_id: str, provider: str, api_key: str, clicked: float
    ) -> AuthSessionOut:
        """API-key mode: the key goes straight into the vault; the session is born finished."""
        now = utcnow()
        ms = round((time.monotonic() - clicked) * 1000, 1)
        async with session_scope(self.context.sessions) as session:
            await credentials.store_api_key(session, self.context.vault, user_id, provider, api_key)
            row = AuthSession(
                user_id=user_id,
                provider=provider,
                mode=LoginMode.API_KEY.value,
                phase=AuthPhase.AUTHENTICATED,
                timings={"endedMs": ms},
                created_at=now,
                updated_at=now,
                expires_at=now,
            )
            session.add(row)
        return session_out(row)

    async def _ensure_user(self, caller: Principal, user_id: str) -> None:
        async with self.context.sessions() as session:
            if await session.get(User, user_id) is not None:
                return
        if caller.kind is not TokenKind.SERVICE:
            raise NotFound(
                f"no user {user_id!r}; create it first (POST /api/users)", code="unknown_user"
            )
        with contextlib.suppress(IntegrityError):  # created by a concurrent start: fine
            async with session_scope(self.context.sessions) as session:
                session.add(User(id=user_id))

    def _supersede(self, user_id: str, provider: str) -> None:
        """A new login for the same provider cancels the older one (an abandoned tab).

        In the background: the new login's click-to-URL time must not include
        the old VM's teardown.
        """
        for other in list(self.live.values()):
            if (other.user_id, other.provider) == (user_id, provider) and not other.capturing:
                self._spawn(
                    self._cancel_live(
                        other, "superseded", "superseded by a newer login for this provider"
                    )
                )

    # -- follow -------------------------------------------------------------------

    async def get(self, caller: Principal, session_id: str) -> AuthSessionOut:
        return session_out(await self._authorized(caller, session_id))

    async def events(self, caller: Principal, session_id: str) -> AsyncIterator[bytes]:
        """Check access now (a 404 must be a plain answer, not a broken stream), then stream."""
        await self._authorized(caller, session_id)
        return self._stream(session_id)

    async def _stream(self, session_id: str) -> AsyncIterator[bytes]:
        last: dict[str, Any] | None = None
        sent_at = time.monotonic()
        while True:
            changed = self.rows.changed(session_id)  # before the read: no change is missed
            row = await self._row(session_id)
            data = session_out(row).model_dump(mode="json", by_alias=True)
            if data != last:
                yield encode("session", data)
                last, sent_at = data, time.monotonic()
            if row.phase.ended:
                return
            # The heartbeat counts from the last bytes sent, not from the last
            # wake-up: writes that change nothing visible must not starve it.
            quiet = self.heartbeat_seconds - (time.monotonic() - sent_at)
            try:
                await asyncio.wait_for(changed.wait(), max(0.0, quiet))
            except TimeoutError:
                yield b": heartbeat\n\n"
                sent_at = time.monotonic()

    # -- the user's answer (step 10 → 11) -----------------------------------------

    async def submit(self, caller: Principal, session_id: str, body: CodeSubmit) -> AuthSessionOut:
        row = await self._authorized(caller, session_id)
        if (body.code is None) == (body.callback_url is None):
            raise BadRequest(
                "send exactly one of 'code' (the code the provider's page showed) or "
                "'callbackUrl' (the browser's address after signing in)",
                code="answer_required",
            )
        live = self._ready_for_answer(row)
        live.answering = True  # set before any await: a second answer now gets login_busy
        try:
            return await self._relay(live, body)
        finally:
            live.answering = False

    async def _relay(self, live: Live, body: CodeSubmit) -> AuthSessionOut:
        assert live.vm is not None and live.agent_session is not None
        code = body.code.get_secret_value() if body.code is not None else None
        callback_url = (
            body.callback_url.get_secret_value() if body.callback_url is not None else None
        )
        verifying = await self.rows.update(
            live, phase=AuthPhase.VERIFYING, error_code=None, error_message=None
        )
        if not verifying:
            raise Conflict("this login already ended; start a new one", code="session_ended")
        try:
            result = await live.vm.agent.submit_code(
                live.agent_session, code=code, callback_url=callback_url,
                wait_seconds=CODE_WAIT_SECONDS,
            )  # fmt: skip
        except AgentRequestError as exc:
            # Refused before the CLI saw it (wrong state, wrong host, ...): still waiting.
            await self.rows.update(live, phase=AuthPhase.AWAITING_USER)
            raise relay_error(exc) from None
        except AgentUnreachable:
            await self.rows.update(live, phase=AuthPhase.AWAITING_USER)
            raise BadGateway(
                "the login VM did not answer; try again, or start a new login",
                code="agent_unreachable",
            ) from None
        await self.driver.mirror(live, result)
        if result.phase is not LoginPhase.AWAITING_USER:
            # Accepted (or ended): the driver captures; answer with the outcome.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(live.ended.wait(), SETTLE_SECONDS)
        return session_out(await self._row(live.id))

    def _ready_for_answer(self, row: AuthSession) -> Live:
        phase = row.phase
        live = self.live.get(row.id)
        if phase.ended or live is None or live.finished:
            raise Conflict(
                f"this login already ended ({phase.value}); start a new one",
                code="session_ended",
            )
        if phase is AuthPhase.CAPTURING or live.capturing:
            raise Conflict(
                "this login already succeeded; its credentials are being stored",
                code="session_capturing",
            )
        if live.agent_session is None or phase in (AuthPhase.CLAIMING_VM, AuthPhase.STARTING_LOGIN):
            raise Conflict(
                "the login link is not shown yet; paste the code once it is",
                code="login_not_ready",
            )
        if live.answering:
            raise Conflict("the previous answer is still being checked", code="login_busy")
        return live

    # -- cancel ----------------------------------------------------------------------

    async def cancel(self, caller: Principal, session_id: str) -> AuthSessionOut:
        row = await self._authorized(caller, session_id)
        phase = row.phase
        live = self.live.get(session_id)
        if phase is AuthPhase.CANCELLED:
            return session_out(row)  # cancelling twice is fine
        if phase.ended:
            raise Conflict(
                f"this login already ended ({phase.value}); nothing to cancel", code="session_ended"
            )
        if live is None:
            # Not driven by this process (it restarted and recover() missed it): end the row.
            await self.rows.write(
                session_id,
                phase=AuthPhase.CANCELLED,
                error_code="cancelled",
                error_message="cancelled by request",
            )
        elif live.capturing:
            raise Conflict(
                "this login already succeeded; its credentials are being stored",
                code="session_capturing",
            )
        else:
            await self._cancel_live(live, "cancelled", "cancelled by request")
        row = await self._row(session_id)
        if row.phase is not AuthPhase.CANCELLED:
            raise Conflict(
                f"this login ended ({row.phase}) before it could be cancelled", code="session_ended"
            )
        return session_out(row)

    async def _cancel_live(self, live: Live, code: str, message: str) -> None:
        if live.task is not None and not live.task.done():
            live.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await live.task
        await self.driver.finish(live, AuthPhase.CANCELLED, code, message)
        await live.ended.wait()

    # -- service life ----------------------------------------------------------------

    async def recover(self) -> None:
        """At start: logins of a previous process cannot go on (their CLI died with its VM)."""
        vms: VmManager | None = self.context.vm_manager
        async with session_scope(self.context.sessions) as session:
            rows = (
                await session.execute(
                    select(AuthSession).where(
                        AuthSession.phase.not_in([p for p in AuthPhase if p.ended])
                    )
                )
            ).scalars()
            orphans = [(row.id, row.vm_id) for row in rows]
        for session_id, vm_id in orphans:
            if vm_id is not None and vms is not None and vms.get(vm_id) is not None:
                try:
                    await vms.destroy(vm_id, f"auth session {session_id} orphaned by a restart")
                except Exception:  # the VM manager records what was left; the row must end
                    log.exception(
                        "destroying an orphaned auth VM failed",
                        extra={"auth_session": session_id, "vm_id": vm_id},
                    )
            await self.rows.write(
                session_id,
                phase=AuthPhase.FAILED,
                error_code="controller_restarted",
                error_message="the controller restarted during this login; start a new one",
            )

    async def close(self) -> None:
        """At stop: end every login in progress and destroy its VM."""
        self.driver.closing = True
        for live in list(self.live.values()):
            if live.task is not None:
                live.task.cancel()
        tasks = [t for live in self.live.values() if (t := live.task) is not None]
        await asyncio.gather(*tasks, *self._background, return_exceptions=True)
        for live in list(self.live.values()):
            await self.driver.finish(
                live,
                AuthPhase.FAILED,
                "controller_stopped",
                "the controller stopped during this login; start a new one",
            )
        await asyncio.gather(*self.driver.endings, return_exceptions=True)

    # -- helpers -----------------------------------------------------------------------

    def _vms(self) -> VmManager:
        return self.context.vms()  # 503 vms_unavailable when it is not running

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _row(self, session_id: str) -> AuthSession:
        row = await self.rows.load(session_id)
        if row is None:
            raise NotFound(f"no login session {session_id!r}", code="unknown_session")
        return row

    async def _authorized(self, caller: Principal, session_id: str) -> AuthSession:
        row = await self.rows.load(session_id)
        if row is None or not caller.can_act_for(row.user_id):
            # The same answer for "not yours" and "not there".
            raise NotFound(f"no login session {session_id!r}", code="unknown_session")
        return row


async def start_service(context: AppContext) -> None:
    flows = AuthFlows(context)
    context.auth_flows = flows
    await flows.recover()


async def stop_service(context: AppContext) -> None:
    flows, context.auth_flows = context.auth_flows, None
    if flows is not None:
        await flows.close()
