"""The agent's HTTP API: routes, token check, translation of provider errors.

The seed's endpoints keep their names and shapes (``/health``,
``/auth/{provider}``, ``/oauth-url``, ``/credentials/status``,
``/credentials/write``); the rest is what the whole flow needs. README.md has
an example per endpoint.
"""

from __future__ import annotations

import hmac
import re
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from remotecli import __version__
from remotecli.agent import diagnostics, identity, log
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
from remotecli.providers import Provider, ProviderError, get_provider
from remotecli.providers.base import LoginMode, PromptOptions

MAX_WAIT_SECONDS = 30.0
MAX_PROMPT_CHARS = 200_000

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
        r = self._route
        r("GET", r"/health", self.health, public=True)
        r("POST", r"/auth/(?P<provider>[^/]+)", self.start_login)
        r("GET", r"/oauth-url", self.oauth_url)
        r("GET", r"/credentials/status", self.credentials_status)
        r("POST", r"/credentials/write", self.credentials_write)
        r("GET", r"/credentials", self.credentials_read)
        r("GET", r"/sessions", self.list_sessions)
        r("GET", r"/sessions/(?P<id>[^/]+)", self.get_session)
        r("POST", r"/sessions/(?P<id>[^/]+)/code", self.submit_code)
        r("DELETE", r"/sessions/(?P<id>[^/]+)", self.cancel_session)
        r("POST", r"/prompts", self.run_prompt)
        r("GET", r"/prompts", self.list_runs)
        r("DELETE", r"/prompts/(?P<id>[^/]+)", self.cancel_run)
        r("GET", r"/diagnostics", self.diagnostics)
        r("POST", r"/identity", self.set_identity)

    def _route(self, method: str, pattern: str, handler: Route, *, public: bool = False) -> None:
        self._routes.append((method, re.compile(pattern + r"/?"), handler, public))

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
        return Response(
            body={
                "status": "ok",
                "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
                "activeSessions": len(self.logins.active()),
                "activeRuns": len(self.runs.all()),
                "version": __version__,
            }
        )

    async def start_login(self, request: Request, match: re.Match[str]) -> Response:
        provider = get_provider(match["provider"])
        body = request.json()
        mode = _mode(body.get("mode"), provider)
        wait = _wait(body.get("waitSeconds", 10))
        session = await self.logins.start(provider, mode)
        await session.wait_until(lambda s: s.phase is not Phase.STARTING, wait)
        return Response(201, session.to_dict())

    async def oauth_url(self, request: Request, match: re.Match[str]) -> Response:
        session = self.logins.get(request.query.get("sessionId"))
        await session.wait_until(
            lambda s: s.view.url is not None, _wait(request.query.get("wait", 0))
        )
        return Response(
            body=_pick(
                session.to_dict(),
                "sessionId",
                "provider",
                "mode",
                "phase",
                "oauthUrl",
                "userCode",
                "instructions",
                "error",
            )
        )

    async def credentials_status(self, request: Request, match: re.Match[str]) -> Response:
        session = self.logins.get(request.query.get("sessionId"))
        await session.wait_until(lambda s: s.phase.ended, _wait(request.query.get("wait", 0)))
        return Response(
            body=_pick(
                session.to_dict(),
                "sessionId",
                "provider",
                "phase",
                "authenticated",
                "error",
                "exitCode",
            )
        )

    async def credentials_write(self, request: Request, match: re.Match[str]) -> Response:
        body = request.json()
        provider = get_provider(_str(body, "provider"))
        writes = self.store.parse_writes(provider, body.get("files"))
        self.store.write(writes)
        seeded = self.store.seed(provider, _mode(body.get("mode"), provider))
        current = self.store.read(provider)
        return Response(
            body={
                "provider": provider.name,
                "written": [w.path for w in writes],
                "seeded": seeded,
                "version": current["version"],
                "complete": current["complete"],
            }
        )

    # -- the rest of the flow --------------------------------------------------

    async def credentials_read(self, request: Request, match: re.Match[str]) -> Response:
        provider = get_provider(request.query.get("provider", ""))
        return Response(body=self.store.read(provider))

    async def list_sessions(self, request: Request, match: re.Match[str]) -> Response:
        return Response(body={"sessions": [s.to_dict() for s in self.logins.all()]})

    async def get_session(self, request: Request, match: re.Match[str]) -> Response:
        session = self.logins.get(match["id"])
        return Response(body=session.to_dict())

    async def submit_code(self, request: Request, match: re.Match[str]) -> Response:
        session = self.logins.get(match["id"])
        body = request.json()
        code, callback = body.get("code"), body.get("callbackUrl")
        if code is not None and not isinstance(code, str):
            raise BadRequest("'code' must be a string", code="invalid_body")
        if callback is not None and not isinstance(callback, str):
            raise BadRequest("'callbackUrl' must be a string", code="invalid_body")
        wait = _wait(body.get("waitSeconds", 15))
        relay_status = await session.submit(code, callback)
        await session.wait_until(_settled, wait)
        result = session.to_dict()
        if relay_status is not None:
            result["relayStatus"] = relay_status
        return Response(body=result)

    async def cancel_session(self, request: Request, match: re.Match[str]) -> Response:
        session = self.logins.get(match["id"])
        await session.cancel()
        return Response(body=session.to_dict())

    async def run_prompt(self, request: Request, match: re.Match[str]) -> StreamingResponse:
        """Stream a prompt run as NDJSON; the first line proves the CLI started."""
        body = request.json()
        provider = get_provider(_str(body, "provider"))
        prompt = _str(body, "prompt")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise BadRequest(
                f"prompt is longer than {MAX_PROMPT_CHARS} characters", code="prompt_too_long"
            )
        options = _options(body.get("options"))
        api_key = body.get("apiKey")
        if api_key is not None and (not isinstance(api_key, str) or not api_key.strip()):
            raise BadRequest("'apiKey' must be a non-empty string", code="invalid_body")
        timeout = body.get("timeoutSeconds", self.config.run_timeout)
        if not isinstance(timeout, int | float) or not 0 < timeout <= self.config.max_run_timeout:
            raise BadRequest(
                f"'timeoutSeconds' must be a number in (0, {self.config.max_run_timeout:.0f}]",
                code="invalid_body",
            )
        if api_key is None and not self.store.has_credentials(provider):
            raise BadRequest(
                f"{provider.display_name} has no credentials in this VM: log in or write them "
                "with POST /credentials/write, or pass 'apiKey'",
                code="not_logged_in",
            )
        run = PromptRun(provider, prompt, options, api_key=api_key, timeout=float(timeout))
        # Spawn before answering, so a missing CLI is a 400, not a broken stream.
        events = run.events(self.config, self.store, request.disconnected)
        first = await anext(events)
        self.runs.add(run)

        async def lines() -> AsyncGenerator[dict[str, Any], None]:
            try:
                yield first
                async for item in events:
                    yield item
            finally:
                await events.aclose()
                self.runs.remove(run)

        return StreamingResponse(lines())

    async def list_runs(self, request: Request, match: re.Match[str]) -> Response:
        return Response(body={"runs": [r.to_dict() for r in self.runs.all()]})

    async def cancel_run(self, request: Request, match: re.Match[str]) -> Response:
        run = self.runs.get(match["id"])
        run.cancelled.set()
        return Response(202, {"runId": run.id, "cancelling": True})

    async def diagnostics(self, request: Request, match: re.Match[str]) -> Response:
        return Response(body=await diagnostics.collect(self.config))

    async def set_identity(self, request: Request, match: re.Match[str]) -> Response:
        """A restored clone becomes itself: new token, hostname, entropy, clock (identity.py)."""
        new = identity.parse(request.json())
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
        log.log("agent.identity", hostname=done["hostname"], applied=sorted(done["applied"]))
        return Response(body=done)

    async def shutdown(self) -> None:
        self.runs.cancel_all()
        await self.logins.shutdown()


def _settled(session: LoginSession) -> bool:
    return session.phase is not Phase.VERIFYING


def _str(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"'{key}' is required and must be a non-empty string", code="invalid_body")
    return value


def _mode(value: Any, provider: Provider) -> LoginMode:
    if value is None:
        return provider.login_modes[0]
    try:
        return LoginMode(value)
    except ValueError:
        raise BadRequest(
            f"unknown login mode {value!r}; {provider.display_name} supports: "
            + ", ".join(m.value for m in provider.login_modes),
            code="unsupported_login_mode",
        ) from None


def _wait(value: Any) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise BadRequest("wait must be a number of seconds", code="invalid_body") from None
    if not 0 <= seconds <= MAX_WAIT_SECONDS:
        raise BadRequest(
            f"wait must be between 0 and {MAX_WAIT_SECONDS:.0f} seconds", code="invalid_body"
        )
    return seconds


def _options(value: Any) -> PromptOptions:
    if value is None:
        return PromptOptions()
    if not isinstance(value, dict):
        raise BadRequest("'options' must be an object", code="invalid_body")
    unknown = set(value) - {"model", "permission"}
    if unknown:
        raise BadRequest(f"unknown options: {', '.join(sorted(unknown))}", code="invalid_option")
    model = value.get("model")
    if model is not None and (
        not isinstance(model, str) or not re.fullmatch(r"[\w.:/-]{1,100}", model)
    ):
        raise BadRequest("'model' must be a model name", code="invalid_option")
    permission = value.get("permission", "workspace-write")
    if not isinstance(permission, str):
        raise BadRequest("'permission' must be a string", code="invalid_option")
    return PromptOptions(model=model, permission=permission)


def _pick(data: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: data[k] for k in keys}
