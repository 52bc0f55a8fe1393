"""The agent's HTTP API: routes, token check, translation of provider errors.

The seed's endpoints keep their names and shapes (``/health``,
``/auth/{provider}``, ``/oauth-url``, ``/credentials/status``,
``/credentials/write``); the rest is what the whole flow needs. README.md has
an example per endpoint. The routes, their request bodies and their answers
are the wire's (``wire.py``): each handler parses its request with the
request's dataclass and answers with an answer dataclass.
"""

from __future__ import annotations

import dataclasses
import hmac
import re
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from remotecli import __version__
from remotecli.agent import diagnostics, identity, log, wire
from remotecli.agent.codec import to_json
from remotecli.agent.config import AgentConfig
from remotecli.agent.credentials import CredentialStore
from remotecli.agent.errors import (
    BadRequest,
    MethodNotAllowed,
    NotFound,
    Unauthorized,
    UpstreamFailed,
)
from remotecli.agent.http import Request, Response, StreamingResponse
from remotecli.agent.logins import LoginManager, LoginSession, Phase
from remotecli.agent.runs import PromptRun, RunManager
from remotecli.providers import ProviderError, get_provider

MAX_WAIT_SECONDS = wire.MAX_WAIT_SECONDS
MAX_PROMPT_CHARS = wire.MAX_PROMPT_CHARS

Route = Callable[[Request, re.Match[str]], Awaitable[Response | StreamingResponse]]


class AgentApp:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.store = CredentialStore(config.home, config.run_as)
        self.logins = LoginManager(config, self.store)
        self.runs = RunManager()
        #: The VM token; POST /identity replaces it (a clone of a golden snapshot).
        self.token = config.token
        self._routes: list[tuple[str, re.Pattern[str], Route, bool]] = []
        handlers: dict[wire.Route, Route] = {
            wire.HEALTH: self.health,
            wire.START_LOGIN: self.start_login,
            wire.LOGIN_URL: self.oauth_url,
            wire.LOGIN_STATUS: self.credentials_status,
            wire.WRITE_CREDENTIALS: self.credentials_write,
            wire.READ_CREDENTIALS: self.credentials_read,
            wire.LIST_SESSIONS: self.list_sessions,
            wire.GET_SESSION: self.get_session,
            wire.SUBMIT_CODE: self.submit_code,
            wire.CANCEL_SESSION: self.cancel_session,
            wire.RUN_PROMPT: self.run_prompt,
            wire.LIST_RUNS: self.list_runs,
            wire.CANCEL_RUN: self.cancel_run,
            wire.DIAGNOSTICS: self.diagnostics,
            wire.SET_IDENTITY: self.set_identity,
        }
        for route in wire.ROUTES:
            self._route(route, handlers[route])

    def _route(self, route: wire.Route, handler: Route) -> None:
        pattern = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", route.path)
        self._routes.append((route.method, re.compile(pattern + r"/?"), handler, route.public))

    async def __call__(self, request: Request) -> Response | StreamingResponse:
        allowed: list[str] = []
        for method, pattern, handler, public in self._routes:
            match = pattern.fullmatch(request.path)
            if match is None:
                continue
            if method != request.method:
                allowed.append(method)
                continue
            if not public:
                self._check_token(request)
            try:
                return await handler(request, match)
            except ProviderError as exc:
                raise BadRequest(str(exc), code=exc.code) from exc
        if allowed:
            raise MethodNotAllowed(
                f"{request.method} is not allowed here; use {', '.join(allowed)}"
            )
        raise NotFound(f"no endpoint {request.path}; see README.md for the agent API")

    def _check_token(self, request: Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized(
                "missing 'Authorization: Bearer <VM token>' header", code="token_required"
            )
        if not hmac.compare_digest(token.strip().encode(), self.token.encode()):
            raise Unauthorized("the VM token is wrong", code="invalid_token")

    # -- seed endpoints --------------------------------------------------------

    async def health(self, request: Request, match: re.Match[str]) -> Response:
        return _answer(
            wire.Health(
                status="ok",
                timestamp=time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
                active_sessions=len(self.logins.active()),
                active_runs=len(self.runs.all()),
                version=__version__,
            )
        )

    async def start_login(self, request: Request, match: re.Match[str]) -> Response:
        provider = get_provider(match["provider"])
        start = wire.StartLogin.parse(provider, request.json())
        assert start.mode is not None  # parse() picks the provider's default
        session = await self.logins.start(provider, start.mode)
        await session.wait_until(lambda s: s.phase is not Phase.STARTING, start.wait_seconds)
        return _answer(session.to_wire(), 201)

    async def oauth_url(self, request: Request, match: re.Match[str]) -> Response:
        query = wire.LoginQuery.parse(request.query)
        session = self.logins.get(query.session_id)
        await session.wait_until(lambda s: s.view.url is not None, query.wait)
        view = session.to_wire()
        return _answer(
            wire.LoginUrl(
                view.session_id, view.provider, view.mode, view.phase, view.oauth_url,
                view.user_code, view.instructions, view.error,
            )
        )  # fmt: skip

    async def credentials_status(self, request: Request, match: re.Match[str]) -> Response:
        query = wire.LoginQuery.parse(request.query)
        session = self.logins.get(query.session_id)
        await session.wait_until(lambda s: s.phase.ended, query.wait)
        view = session.to_wire()
        return _answer(
            wire.LoginStatus(
                view.session_id, view.provider, view.phase, view.authenticated, view.error,
                view.exit_code,
            )
        )  # fmt: skip

    async def credentials_write(self, request: Request, match: re.Match[str]) -> Response:
        write = wire.WriteCredentials.parse(request.json())
        provider = get_provider(write.provider)
        writes = self.store.parse_writes(provider, write.files)
        self.store.write(writes)
        assert write.mode is not None  # parse() picks the provider's default
        seeded = self.store.seed(provider, write.mode)
        current = self.store.read(provider)
        return _answer(
            wire.CredentialsWritten(
                provider=provider.name,
                written=[w.path for w in writes],
                seeded=seeded,
                version=current.version,
                complete=current.complete,
            )
        )

    # -- the rest of the flow --------------------------------------------------

    async def credentials_read(self, request: Request, match: re.Match[str]) -> Response:
        query = wire.CredentialsQuery.parse(request.query)
        return _answer(self.store.read(get_provider(query.provider)))

    async def list_sessions(self, request: Request, match: re.Match[str]) -> Response:
        return _answer(wire.Sessions([s.to_wire() for s in self.logins.all()]))

    async def get_session(self, request: Request, match: re.Match[str]) -> Response:
        session = self.logins.get(match["id"])
        return _answer(session.to_wire())

    async def submit_code(self, request: Request, match: re.Match[str]) -> Response:
        session = self.logins.get(match["id"])
        answer = wire.SubmitCode.parse(match["id"], request.json())
        relay_status = await session.submit(answer.code, answer.callback_url)
        await session.wait_until(_settled, answer.wait_seconds)
        return _answer(dataclasses.replace(session.to_wire(), relay_status=relay_status))

    async def cancel_session(self, request: Request, match: re.Match[str]) -> Response:
        session = self.logins.get(match["id"])
        await session.cancel()
        return _answer(session.to_wire())

    async def run_prompt(self, request: Request, match: re.Match[str]) -> StreamingResponse:
        """Stream a prompt run as NDJSON; the first line proves the CLI started."""
        ask = wire.RunPrompt.parse(
            request.json(),
            default_timeout=self.config.run_timeout,
            max_timeout=self.config.max_run_timeout,
        )
        provider = get_provider(ask.provider)
        if ask.api_key is None and not self.store.has_credentials(provider):
            raise BadRequest(
                f"{provider.display_name} has no credentials in this VM: log in or write them "
                "with POST /credentials/write, or pass 'apiKey'",
                code="not_logged_in",
            )
        assert ask.timeout_seconds is not None  # parse() puts the default in
        run = PromptRun(
            provider, ask.prompt, ask.prompt_options(), api_key=ask.api_key,
            timeout=ask.timeout_seconds,
        )  # fmt: skip
        # Spawn before answering, so a missing CLI is a 400, not a broken stream.
        events = run.events(self.config, self.store, request.disconnected)
        first = await anext(events)
        self.runs.add(run)

        async def lines() -> AsyncGenerator[dict[str, Any], None]:
            try:
                yield to_json(first)
                async for item in events:
                    yield to_json(item)
            finally:
                await events.aclose()
                self.runs.remove(run)

        return StreamingResponse(lines())

    async def list_runs(self, request: Request, match: re.Match[str]) -> Response:
        return _answer(wire.Runs([r.to_wire() for r in self.runs.all()]))

    async def cancel_run(self, request: Request, match: re.Match[str]) -> Response:
        run = self.runs.get(match["id"])
        run.cancelled.set()
        return _answer(wire.RunCancelled(run_id=run.id, cancelling=True), 202)

    async def diagnostics(self, request: Request, match: re.Match[str]) -> Response:
        return _answer(await diagnostics.collect(self.config))

    async def set_identity(self, request: Request, match: re.Match[str]) -> Response:
        """A restored clone becomes itself: new token, hostname, entropy, clock (identity.py)."""
        new = wire.SetIdentity.parse(request.json())
        try:
            done = identity.apply(
                new, machine=self.config.machine_identity, token_file=self.config.token_file
            )
        except OSError as exc:
            raise UpstreamFailed(
                f"could not apply the new identity: {exc.strerror or exc}; the old token "
                "still works, retry or destroy this VM",
                code="identity_failed",
            ) from exc
        self.token = new.token
        log.log("agent.identity", hostname=done.hostname, applied=sorted(done.applied))
        return _answer(done)

    async def shutdown(self) -> None:
        self.runs.cancel_all()
        await self.logins.shutdown()


def _settled(session: LoginSession) -> bool:
    return session.phase is not Phase.VERIFYING


def _answer(answer: object, status: int = 200) -> Response:
    return Response(status, to_json(answer))
