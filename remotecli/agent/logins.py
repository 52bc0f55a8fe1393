"""Login sessions: one CLI login process in a PTY, watched until it ends.

A session reads the CLI's terminal through ``providers.terminal.Transcript``
and asks its provider what the screen says (URL, user code, code prompt,
failure). It relays the user's answer (a pasted code typed into the PTY, or a
callback URL replayed to the CLI's listener) and decides the outcome from the
process exit and the credential files. Every session has a deadline; cancel,
expiry, failure and success all end with the whole process group stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from collections.abc import Callable

from remotecli.agent.config import AgentConfig
from remotecli.agent.credentials import CredentialStore
from remotecli.agent.errors import BadRequest, Conflict, NotFound, UpstreamFailed
from remotecli.agent.log import log, redact
from remotecli.agent.process import PTY_COLUMNS, spawn, stop_group
from remotecli.agent.relay import check_callback, forward
from remotecli.agent.wire import Callback, LoginPhase, Problem, Session
from remotecli.providers import Provider
from remotecli.providers.base import InvalidCode, LoginCommand, LoginMode, LoginView
from remotecli.providers.terminal import Transcript

# How often a running login looks for its credential files: Gemini writes them
# and carries on into its TUI instead of exiting.
CREDENTIAL_POLL_SECONDS = 0.25
# Sessions that ended are kept this long for status queries, then forgotten.
KEEP_ENDED = 200


#: The agent's login phase is the wire's (the host reads the same enum).
Phase = LoginPhase

_ENDINGS = frozenset(p for p in Phase if p.ended)
_TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.STARTING: frozenset({Phase.AWAITING_USER}) | _ENDINGS,
    Phase.AWAITING_USER: frozenset({Phase.VERIFYING}) | _ENDINGS,
    Phase.VERIFYING: frozenset({Phase.AWAITING_USER}) | _ENDINGS,
    Phase.AUTHENTICATED: frozenset(),
    Phase.FAILED: frozenset(),
    Phase.CANCELLED: frozenset(),
    Phase.EXPIRED: frozenset(),
}


class LoginSession:
    def __init__(
        self,
        provider: Provider,
        command: LoginCommand,
        store: CredentialStore,
        *,
        deadline_seconds: float,
    ) -> None:
        self.id = secrets.token_urlsafe(16)
        self.provider = provider
        self.command = command
        self.store = store
        self.phase = Phase.STARTING
        self.view = LoginView()
        self.error: Problem | None = None
        self.exit_code: int | None = None
        self.created_at = time.time()
        self._t0 = time.monotonic()
        self._deadline = self._t0 + deadline_seconds
        self.deadline_seconds = deadline_seconds
        self.timings: dict[str, float] = {}
        self._transcript = Transcript(columns=PTY_COLUMNS)
        self._proc: asyncio.subprocess.Process | None = None
        self._master: int | None = None
        self._eof = asyncio.Event()
        self._changed = asyncio.Event()
        self._prompts_at_submit = 0
        self._creds_before: str | None = None
        self._supervisor: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------

    async def start(self, config: AgentConfig) -> None:
        self._creds_before = self.store.version(self.provider)
        env = config.child_env(self.command.env, term="xterm-256color")
        self._proc, self._master = await spawn(
            self.command.argv, env=env, cwd=str(config.workspace), run_as=config.run_as, pty=True
        )
        master = self._master
        assert master is not None  # spawn(pty=True) always returns one
        asyncio.get_running_loop().add_reader(master, self._on_readable)
        self._supervisor = asyncio.create_task(self._supervise(), name=f"login-{self.id}")
        log(
            "login.started",
            session=self.id,
            provider=self.provider.name,
            mode=self.command.mode.value,
            pid=self._proc.pid,
        )

    async def cancel(self, reason: str = "cancelled by request") -> None:
        await self._finish(Phase.CANCELLED, "cancelled", reason)

    async def wait_until(self, done: Callable[[LoginSession], bool], seconds: float) -> None:
        """Return when ``done(self)`` holds, the session ended, or ``seconds`` passed."""
        end = time.monotonic() + max(0.0, seconds)
        while not done(self) and not self.phase.ended:
            remaining = end - time.monotonic()
            if remaining <= 0:
                return
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)

    # -- the user's answer -----------------------------------------------------

    async def submit(self, code: str | None, callback_url: str | None) -> int | None:
        """Relay the user's answer; returns the CLI listener's HTTP status for callbacks."""
        if self.phase.ended:
            raise Conflict(f"this login already ended ({self.phase.value})", code="login_ended")
        if self.phase is Phase.STARTING:
            raise Conflict(
                "the CLI has not shown its login link yet; try again in a moment",
                code="login_not_ready",
            )
        if self.phase is Phase.VERIFYING:
            raise Conflict("the previous answer is still being checked", code="login_busy")
        mode = self.command.mode
        if mode is LoginMode.DEVICE_CODE:
            raise Conflict(
                "device login needs nothing pasted: enter the code at the link",
                code="nothing_to_submit",
            )
        if mode is LoginMode.LOCALHOST_CALLBACK:
            if not callback_url:
                raise BadRequest(
                    "this login expects 'callbackUrl': the address-bar URL",
                    code="callback_url_required",
                )
            return await self._relay(callback_url)
        if not code:
            raise BadRequest(
                "this login expects 'code': the code the page showed", code="code_required"
            )
        try:
            text = self.provider.format_code(code, self.view)
        except InvalidCode as exc:
            raise BadRequest(str(exc), code=exc.code) from exc
        self._prompts_at_submit = self.view.code_prompts
        self.error = None
        self._transition(Phase.VERIFYING)
        assert self._master is not None
        os.write(self._master, text.encode() + b"\r")
        log("login.code_submitted", session=self.id, provider=self.provider.name)
        return None

    async def _relay(self, callback_url: str) -> int:
        target = self.view.callback
        if target is None:
            raise Conflict("the CLI is not waiting for a callback", code="no_callback_listener")
        path_and_query = check_callback(callback_url, target)
        self.error = None
        self._transition(Phase.VERIFYING)
        try:
            status = await forward(target, path_and_query)
        except UpstreamFailed:
            if self.phase is Phase.VERIFYING:
                self._transition(Phase.AWAITING_USER)
            raise
        log(
            "login.callback_relayed",
            session=self.id,
            provider=self.provider.name,
            port=target.port,
            status=status,
        )
        if status >= 400 and self.phase is Phase.VERIFYING:
            self.error = Problem(
                code="callback_rejected",
                message=f"the CLI refused the callback (HTTP {status})",
            )
            self._transition(Phase.AWAITING_USER)
        return status

    # -- watching the CLI ------------------------------------------------------

    def _on_readable(self) -> None:
        assert self._master is not None
        try:
            data = os.read(self._master, 65536)
        except BlockingIOError:
            return
        except OSError:  # EIO: every writer of the PTY is gone
            data = b""
        if not data:
            self._stop_reading()
            self._eof.set()
            return
        self._transcript.feed(data)
        self._update_view()

    def _update_view(self) -> None:
        view = self.provider.read_login(self._transcript.text, self._transcript.links)
        if view == self.view:
            return
        self.view = view
        if view.url and "urlMs" not in self.timings:
            self.timings["urlMs"] = self._elapsed_ms()
        if self.phase is Phase.STARTING and view.url:
            self._transition(Phase.AWAITING_USER)
        elif (
            self.phase is Phase.VERIFYING
            and self.command.mode is not LoginMode.LOCALHOST_CALLBACK
            and view.code_prompts > self._prompts_at_submit
        ):
            # The CLI asked again: it refused the code (Gemini also shows a new URL).
            self.error = Problem(
                code="code_rejected",
                message=view.rejection
                or "The CLI did not accept that code. Open the newest link and paste the new code.",
            )
            self._transition(Phase.AWAITING_USER)
        self._notify()

    async def _supervise(self) -> None:
        assert self._proc is not None
        exited = asyncio.create_task(self._proc.wait())
        try:
            while not self.phase.ended:
                remaining = self._deadline - time.monotonic()
                if remaining <= 0:
                    await self._finish(
                        Phase.EXPIRED,
                        "login_expired",
                        f"no login completed within {self.deadline_seconds:.0f} s; start a new one",
                    )
                    return
                done, _ = await asyncio.wait(
                    {exited}, timeout=min(CREDENTIAL_POLL_SECONDS, remaining)
                )
                if done:
                    await self._on_exit(exited.result())
                    return
                if (
                    self.phase in (Phase.AWAITING_USER, Phase.VERIFYING)
                    and self._credentials_saved()
                ):
                    await self._finish(Phase.AUTHENTICATED)
                    return
        finally:
            exited.cancel()

    async def _on_exit(self, code: int) -> None:
        self.exit_code = code
        # The last words of the CLI may still be in the PTY buffer.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._eof.wait(), 1.0)
        if self._master is not None:
            self._on_readable_until_empty()
        if code == 0 and self._credentials_saved():
            await self._finish(Phase.AUTHENTICATED)
        elif code == 0:
            await self._finish(
                Phase.FAILED,
                "no_credentials",
                "the CLI exited without saving credentials; start the login again",
            )
        else:
            said = self.view.failure or self._tail()
            await self._finish(
                Phase.FAILED,
                "login_failed",
                f"{self.provider.display_name} login failed (exit code {code}): {redact(said)}",
            )

    def _on_readable_until_empty(self) -> None:
        for _ in range(64):
            if self._master is None:
                return
            self._on_readable()

    def _credentials_saved(self) -> bool:
        current = self.store.read(self.provider)
        return current.complete and current.version != self._creds_before

    async def _finish(
        self, phase: Phase, code: str | None = None, message: str | None = None
    ) -> None:
        if self.phase.ended:
            return
        self._transition(phase)
        if code is not None and message is not None:
            self.error = Problem(code, message)
        elif phase is Phase.AUTHENTICATED:
            self.error = None
        self.timings["endedMs"] = self._elapsed_ms()
        if phase is Phase.AUTHENTICATED:
            self.timings["authenticatedMs"] = self.timings["endedMs"]
        self._notify()
        if self._proc is not None:
            await stop_group(self._proc)
            if self.exit_code is None:
                self.exit_code = self._proc.returncode
        self._stop_reading()
        if self._master is not None:
            os.close(self._master)
            self._master = None
        if (
            self._supervisor is not None
            and self._supervisor is not asyncio.current_task()
            and not self._supervisor.done()
        ):
            self._supervisor.cancel()
        log(
            "login.ended",
            session=self.id,
            provider=self.provider.name,
            phase=phase.value,
            code=code,
            exit_code=self.exit_code,
            ms=self.timings["endedMs"],
        )

    def _stop_reading(self) -> None:
        if self._master is not None:
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(self._master)

    def _transition(self, new: Phase) -> None:
        if new not in _TRANSITIONS[self.phase]:
            raise Conflict(
                f"login cannot go from {self.phase.value} to {new.value}", code="bad_transition"
            )
        self.phase = new
        self._notify()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _elapsed_ms(self) -> float:
        return round((time.monotonic() - self._t0) * 1000, 1)

    def _tail(self, lines: int = 5) -> str:
        text = [line.strip() for line in self._transcript.text.splitlines() if line.strip()]
        return " / ".join(text[-lines:]) or "it printed nothing"

    # -- views -----------------------------------------------------------------

    def to_wire(self) -> Session:
        mode = self.command.mode
        callback = self.view.callback
        return Session(
            session_id=self.id,
            provider=self.provider.name,
            mode=mode,
            phase=self.phase,
            authenticated=self.phase is Phase.AUTHENTICATED,
            oauth_url=self.view.url,
            user_code=self.view.user_code,
            instructions=self.command.instructions,
            awaiting_code=self.phase is Phase.AWAITING_USER
            and mode in (LoginMode.PASTE_CODE, LoginMode.LOCALHOST_CALLBACK),
            callback=Callback(callback.port, callback.path) if callback else None,
            error=self.error,
            exit_code=self.exit_code,
            created_at=_iso(self.created_at),
            expires_at=_iso(self.created_at + self.deadline_seconds),
            timings=dict(self.timings),
        )


class LoginManager:
    def __init__(self, config: AgentConfig, store: CredentialStore) -> None:
        self._config = config
        self._store = store
        self._sessions: dict[str, LoginSession] = {}

    async def start(self, provider: Provider, mode: LoginMode) -> LoginSession:
        if mode is LoginMode.API_KEY:
            raise BadRequest(
                "API-key mode needs no login: pass the key as 'apiKey' with each prompt",
                code="api_key_mode_has_no_login",
            )
        if mode not in provider.login_modes:
            raise BadRequest(
                f"{provider.display_name} has no {mode.value!r} login; choose one of: "
                + ", ".join(m.value for m in provider.login_modes),
                code="unsupported_login_mode",
            )
        command = provider.login_command(mode)
        # One login per provider: a second one would fight over the first's
        # port (Codex's fixed 1455) and credential files.
        for other in self.active():
            if other.provider.name == provider.name:
                await other.cancel("superseded by a newer login for the same provider")
        self._store.prepare(provider, mode)
        session = LoginSession(
            provider,
            command,
            self._store,
            deadline_seconds=min(command.deadline_seconds, self._config.login_deadline_cap),
        )
        await session.start(self._config)
        self._sessions[session.id] = session
        self._forget_old()
        return session

    def get(self, session_id: str | None) -> LoginSession:
        if not session_id:
            raise BadRequest("sessionId is required", code="session_id_required")
        try:
            return self._sessions[session_id]
        except KeyError:
            raise NotFound(
                f"no login session {session_id!r} in this VM", code="unknown_session"
            ) from None

    def all(self) -> list[LoginSession]:
        return list(self._sessions.values())

    def active(self) -> list[LoginSession]:
        return [s for s in self._sessions.values() if not s.phase.ended]

    async def shutdown(self) -> None:
        await asyncio.gather(*(s.cancel("the agent is stopping") for s in self.active()))

    def _forget_old(self) -> None:
        ended = [s for s in self._sessions.values() if s.phase.ended]
        for session in ended[: max(0, len(ended) - KEEP_ENDED)]:
            del self._sessions[session.id]


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
