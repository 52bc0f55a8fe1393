"""The host side's client of the in-VM agent (over the instance's ``AgentEndpoint``).

One typed method per agent route (``agent/wire.py``): a wire request
dataclass goes in, the answer comes back as its wire dataclass, and a run's
NDJSON stream as typed ``RunEvent``s. No other host module names an agent
path. An answer that does not have the wire's shape is ``bad_response``.

Agent errors arrive as ``{"code", "message"}`` JSON; they become
``AgentRequestError`` with the same code, so callers branch on codes, never
on message text (its ``status`` is the agent's, not the controller's answer:
that goes by type, ``controller/api/status.py``). Transport failures become
``AgentUnreachable``. Both are ``RemoteCliError`` (the tree drawn in
``remotecli/errors.py``).
``run()`` reads the agent's NDJSON answer one event at a time; leaving its
``async for`` early hangs up, which stops the run. ``request()`` and
``stream()`` are the transport under the typed methods.

A VM is not trusted (docs/SECURITY.md): every answer is read with a cap
(``MAX_ANSWER_BYTES``, and ``MAX_LINE_BYTES`` per streamed line), so a
compromised agent cannot fill the controller's memory; past it the client
hangs up and raises ``answer_too_large``.
"""

from __future__ import annotations

import dataclasses
import json as jsonlib
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import Any, TypeVar

import httpx

from remotecli.agent import codec, wire
from remotecli.errors import RemoteCliError
from remotecli.providers.base import LoginMode
from remotecli.vmm.endpoint import BASE_URL, AgentEndpoint

#: The largest answer read from an agent: its answers (credential files, diagnostics,
#: session lists) are kilobytes.
MAX_ANSWER_BYTES = 16 * 1024 * 1024
#: The longest line of a streamed run: one event (a tool's output can be large).
MAX_LINE_BYTES = 16 * 1024 * 1024
#: The agent waits up to this long inside a long-poll or a start; the transport
#: timeout of such a call is this much longer.
WAIT_SLACK_SECONDS = 15.0

A = TypeVar("A")


class AgentUnreachable(RemoteCliError):
    code = "agent_unreachable"


class AgentRequestError(RemoteCliError):
    """The agent answered with an error; ``code`` is the agent's own."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class AgentClient:
    def __init__(
        self, endpoint: AgentEndpoint | Path, token: str, *, timeout: float = 30.0
    ) -> None:
        self.endpoint = AgentEndpoint.unix(endpoint) if isinstance(endpoint, Path) else endpoint
        self._socket = self.endpoint.describe()
        self._client = httpx.AsyncClient(
            transport=self.endpoint.transport(),
            base_url=BASE_URL,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
        )

    async def __aenter__(self) -> AgentClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    def _check_open(self) -> None:
        # Closed when the VM was destroyed (by the health monitor, say) while a caller
        # still held its handle: that agent is gone, as if its socket had vanished.
        if self._client.is_closed:
            raise AgentUnreachable(f"the agent at {self._socket} is gone: its VM was destroyed")

    # -- the typed calls, one per route of agent/wire.py --------------------------

    async def health(self) -> wire.Health:
        return await self._call(wire.HEALTH, wire.NoRequest(), wire.Health)

    async def diagnostics(self) -> wire.Diagnostics:
        return await self._call(wire.DIAGNOSTICS, wire.NoRequest(), wire.Diagnostics, timeout=60.0)

    async def start_login(
        self, provider: str, mode: LoginMode | None, *, wait_seconds: float
    ) -> wire.Session:
        """Start the CLI's login; answers once it left its starting phase (or ``wait_seconds``)."""
        start = wire.StartLogin(provider, mode, wait_seconds)
        return await self._call(
            wire.START_LOGIN, start, wire.Session, timeout=wait_seconds + WAIT_SLACK_SECONDS
        )

    async def login_url(self, session_id: str, *, wait: float) -> wire.LoginUrl:
        """The login's link and device code, waiting up to ``wait`` for the CLI to print it."""
        query = wire.LoginQuery(session_id, wait)
        return await self._call(
            wire.LOGIN_URL, query, wire.LoginUrl, timeout=wait + WAIT_SLACK_SECONDS
        )

    async def login_status(self, session_id: str, *, wait: float) -> wire.LoginStatus:
        """Whether the login ended, waiting up to ``wait`` for it to end."""
        query = wire.LoginQuery(session_id, wait)
        return await self._call(
            wire.LOGIN_STATUS, query, wire.LoginStatus, timeout=wait + WAIT_SLACK_SECONDS
        )

    async def login(self, session_id: str) -> wire.Session:
        return await self._call(wire.GET_SESSION, wire.SessionRef(session_id), wire.Session)

    async def submit_code(
        self,
        session_id: str,
        *,
        code: str | None = None,
        callback_url: str | None = None,
        wait_seconds: float,
    ) -> wire.Session:
        """Relay what the user pasted (a code, or the callback URL) to the CLI."""
        answer = wire.SubmitCode(session_id, code, callback_url, wait_seconds)
        return await self._call(
            wire.SUBMIT_CODE, answer, wire.Session, timeout=wait_seconds + WAIT_SLACK_SECONDS
        )

    async def cancel_login(self, session_id: str, *, timeout: float | None = None) -> wire.Session:
        ref = wire.SessionRef(session_id)
        return await self._call(wire.CANCEL_SESSION, ref, wire.Session, timeout=timeout)

    async def logins(self, *, timeout: float | None = None) -> list[wire.Session]:
        """Every login the agent holds (also the cheapest call that needs the token)."""
        answer = await self._call(
            wire.LIST_SESSIONS, wire.NoRequest(), wire.Sessions, timeout=timeout
        )
        return answer.sessions

    async def read_credentials(self, provider: str) -> wire.Credentials:
        query = wire.CredentialsQuery(provider)
        return await self._call(wire.READ_CREDENTIALS, query, wire.Credentials)

    async def write_credentials(
        self, provider: str, files: list[wire.FileIn]
    ) -> wire.CredentialsWritten:
        write = wire.WriteCredentials(provider, files)
        return await self._call(wire.WRITE_CREDENTIALS, write, wire.CredentialsWritten)

    async def run(
        self, prompt: wire.RunPrompt, *, read_timeout: float | None = None
    ) -> AsyncGenerator[wire.RunEvent, None]:
        """The run's typed events as they arrive (see ``stream`` for errors and timeouts)."""
        route = wire.RUN_PROMPT
        lines = self.stream(
            route.method, route.path, codec.to_json(prompt), read_timeout=read_timeout
        )
        try:
            async for line in lines:
                try:
                    yield wire.event_from_json(line)
                except codec.WireError as exc:
                    raise AgentRequestError(
                        200, "bad_response",
                        f"the agent's stream for {route.method} {route.path} had a line that is "
                        f"not a run event: {exc}",
                    ) from exc  # fmt: skip
        finally:
            await lines.aclose()

    async def runs(self, *, timeout: float | None = None) -> list[wire.RunInfo]:
        answer = await self._call(wire.LIST_RUNS, wire.NoRequest(), wire.Runs, timeout=timeout)
        return answer.runs

    async def cancel_run(self, run_id: str, *, timeout: float | None = None) -> wire.RunCancelled:
        return await self._call(
            wire.CANCEL_RUN, wire.RunRef(run_id), wire.RunCancelled, timeout=timeout
        )

    async def set_identity(self, identity: wire.SetIdentity) -> wire.IdentityApplied:
        return await self._call(wire.SET_IDENTITY, identity, wire.IdentityApplied)

    async def _call(
        self, route: wire.Route, request: object, answer: type[A], *, timeout: float | None = None
    ) -> A:
        """One request of ``route``: the path and query from ``request``'s path and query
        fields, its body fields as JSON; the answer read back into ``answer``."""
        path = route.path.format(**codec.to_json(request, where="path"))
        params = codec.to_json(request, where="query") or None
        has_body = any(codec.where_of(f) == "body" for f in dataclasses.fields(route.request))
        body = codec.to_json(request) if has_body else None
        data = await self.request(route.method, path, json=body, params=params, timeout=timeout)
        try:
            return codec.from_json(answer, data)
        except codec.WireError as exc:
            raise AgentRequestError(
                route.status, "bad_response",
                f"the agent's answer to {route.method} {path} is not a {answer.__name__}: {exc}",
            ) from exc  # fmt: skip

    # -- the transport -----------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        self._check_open()
        try:
            async with self._client.stream(
                method, path, json=json, params=params,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            ) as response:  # fmt: skip
                status = response.status_code
                content = await _read_capped(response, method, path)
        except httpx.TransportError as exc:
            raise AgentUnreachable(
                f"cannot reach the agent at {self._socket}: {exc.__class__.__name__}: {exc}"
            ) from exc
        if status >= 400:
            raise _error_of(method, path, status, content)
        try:
            body = jsonlib.loads(content)
        except ValueError as exc:
            raise AgentRequestError(
                status, "bad_response",
                f"the agent answered {method} {path} with non-JSON (HTTP {status})",
            ) from exc  # fmt: skip
        if not isinstance(body, dict):
            raise AgentRequestError(status, "bad_response", "expected a JSON object")
        return body

    async def stream(
        self,
        method: str,
        path: str,
        json: dict[str, Any] | None = None,
        *,
        read_timeout: float | None = None,
    ) -> AsyncGenerator[dict[str, Any], None]:
        """The NDJSON objects of one streamed answer, as they arrive.

        An error status is read whole and raised as ``AgentRequestError`` with
        the agent's code before anything is yielded. ``read_timeout`` bounds
        the silence between two lines: None by default, because a CLI may
        think (or run a tool) for minutes and the agent enforces the run's
        own deadline.
        """
        self._check_open()
        timeout = httpx.Timeout(self._client.timeout.connect, read=read_timeout)
        try:
            async with self._client.stream(method, path, json=json, timeout=timeout) as response:
                if response.status_code >= 400:
                    content = await _read_capped(response, method, path)
                    raise _error_of(method, path, response.status_code, content)
                async for line in _lines(response, method, path):
                    if not line.strip():
                        continue
                    try:
                        item = jsonlib.loads(line)
                    except ValueError as exc:
                        raise AgentRequestError(
                            response.status_code, "bad_response",
                            f"the agent's stream for {method} {path} had a line that is not JSON",
                        ) from exc  # fmt: skip
                    if not isinstance(item, dict):
                        raise AgentRequestError(
                            response.status_code, "bad_response",
                            f"the agent's stream for {method} {path} had a non-object line",
                        )  # fmt: skip
                    yield item
        except httpx.TransportError as exc:
            raise AgentUnreachable(
                f"lost the agent at {self._socket} during {method} {path}: "
                f"{exc.__class__.__name__}: {exc}"
            ) from exc


def _error_of(method: str, path: str, status: int, content: bytes) -> AgentRequestError:
    """The agent's ``{"code", "message"}`` error body as an exception (tolerating non-JSON)."""
    try:
        body = jsonlib.loads(content)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return AgentRequestError(
            status, "bad_response",
            f"the agent answered {method} {path}: HTTP {status}, not a JSON error",
        )  # fmt: skip
    return AgentRequestError(
        status, str(body.get("code", "error")), str(body.get("message", f"HTTP {status}"))
    )


def _too_large(status: int, method: str, path: str, what: str, cap: int) -> AgentRequestError:
    return AgentRequestError(
        status, "answer_too_large",
        f"the agent's {what} to {method} {path} passed {cap // (1024 * 1024)} MiB; the "
        "controller hung up (an agent never sends that much: check the VM's console)",
    )  # fmt: skip


async def _read_capped(response: httpx.Response, method: str, path: str) -> bytes:
    """The whole body, or ``answer_too_large`` once it passes ``MAX_ANSWER_BYTES``."""
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > MAX_ANSWER_BYTES:
            raise _too_large(response.status_code, method, path, "answer", MAX_ANSWER_BYTES)
    return bytes(body)


async def _lines(response: httpx.Response, method: str, path: str) -> AsyncIterator[bytes]:
    """The body's lines, or ``answer_too_large`` once one passes ``MAX_LINE_BYTES``."""
    pending = bytearray()
    async for chunk in response.aiter_bytes():
        pending += chunk
        while (end := pending.find(b"\n")) >= 0:
            yield bytes(pending[:end])
            del pending[: end + 1]
        if len(pending) > MAX_LINE_BYTES:
            raise _too_large(response.status_code, method, path, "streamed line", MAX_LINE_BYTES)
    if pending:
        yield bytes(pending)
