"""The agent's wire: every request and answer of its HTTP API, one dataclass each.

Both sides read this one module. The agent (``app.py``) parses each request
body with the request's ``parse`` (the same codes and messages as ever) and
answers with ``codec.to_json`` of an answer dataclass; the host's client
(``vmm/agentclient.py``) builds the request from the same dataclass and reads
the answer back into it with ``codec.from_json``. ``ROUTES`` is the route
table: the agent's router is built from it, the OpenAPI document
(``openapi.py``) is generated from it, and the client takes its paths from it.

A prompt run streams ``RunEvent``s as NDJSON: ``RunStarted``, the provider's
normalized events (``providers/events.py``), then ``RunFinished``.
``event_from_json`` reads one line back into its typed event.

Stdlib only (and ``providers``): this module ships in the guest image.
"""

from __future__ import annotations

import base64
import binascii
import enum
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from remotecli.agent.codec import WireError, from_json, meta
from remotecli.agent.errors import BadRequest
from remotecli.providers import Provider, get_provider
from remotecli.providers.base import LoginMode, PromptOptions
from remotecli.providers.events import (
    Error,
    Event,
    Result,
    SessionStarted,
    TextDelta,
    ToolResult,
    ToolUse,
)

#: Seconds a request may wait for a login to move on.
MAX_WAIT_SECONDS = 30.0
MAX_PROMPT_CHARS = 200_000
MIN_TOKEN = 16
MIN_ENTROPY_BYTES = 32
MAX_ENTROPY_BYTES = 512
HOSTNAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
TOKEN = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no spaces: it travels in a header
MODEL = re.compile(r"[\w.:/-]{1,100}")

_PROVIDER_NOTE = "claude_code, codex or gemini_cli (another name is a 404)"
#: A provider in a request: any string is accepted on the wire (an unknown one is refused).
_PROVIDER: dict[str, Any] = {
    "description": _PROVIDER_NOTE,
    "examples": ["claude_code", "codex", "gemini_cli"],
}
_WAIT: dict[str, Any] = {"minimum": 0, "maximum": MAX_WAIT_SECONDS}


class LoginPhase(enum.StrEnum):
    """Where the agent's login is (its transitions: ``logins.py``)."""

    STARTING = "starting"
    AWAITING_USER = "awaiting_user"
    VERIFYING = "verifying"
    AUTHENTICATED = "authenticated"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @property
    def ended(self) -> bool:
        return self in _ENDED


_ENDED = frozenset(
    {LoginPhase.AUTHENTICATED, LoginPhase.FAILED, LoginPhase.CANCELLED, LoginPhase.EXPIRED}
)


# -- answers ---------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """Why a login is not going well (``code_rejected``, ``login_failed``, ...)."""

    code: str
    message: str


@dataclass(frozen=True)
class Callback:
    """The CLI's localhost listener a callback URL is replayed to."""

    port: int
    path: str


@dataclass(frozen=True)
class Health:
    status: Literal["ok"]
    timestamp: str
    active_sessions: int = field(metadata=meta(minimum=0))
    active_runs: int = field(metadata=meta(minimum=0))
    version: str


@dataclass(frozen=True)
class Session:
    """One login as the agent sees it (``GET /sessions/{id}`` and most login answers)."""

    session_id: str
    provider: str
    mode: LoginMode
    phase: LoginPhase
    authenticated: bool
    oauth_url: str | None
    user_code: str | None
    instructions: str | None
    awaiting_code: bool
    callback: Callback | None
    error: Problem | None
    exit_code: int | None
    created_at: str
    expires_at: str
    timings: dict[str, float]
    #: Only after a relayed callback: the CLI listener's HTTP status.
    relay_status: int | None = field(default=None, metadata=meta(omit_none=True))


@dataclass(frozen=True)
class LoginUrl:
    """``GET /oauth-url``: a login's link and device code."""

    session_id: str
    provider: str
    mode: LoginMode
    phase: LoginPhase
    oauth_url: str | None
    user_code: str | None
    instructions: str | None
    error: Problem | None


@dataclass(frozen=True)
class LoginStatus:
    """``GET /credentials/status``: whether a login has ended."""

    session_id: str
    provider: str
    phase: LoginPhase
    authenticated: bool
    error: Problem | None
    exit_code: int | None


@dataclass(frozen=True)
class Sessions:
    sessions: list[Session]


@dataclass(frozen=True)
class CredentialFile:
    path: str
    mode: str
    sha256: str
    content: str
    encoding: Literal["utf-8", "base64"]


@dataclass(frozen=True)
class Credentials:
    """``GET /credentials``: a provider's files and one content version for the set."""

    provider: str
    complete: bool
    version: str | None
    files: list[CredentialFile]
    missing: list[str]


@dataclass(frozen=True)
class CredentialsWritten:
    provider: str
    written: list[str]
    seeded: list[str]
    version: str | None
    complete: bool


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    provider: str
    started_at: str
    exit_code: int | None


@dataclass(frozen=True)
class Runs:
    runs: list[RunInfo]


@dataclass(frozen=True)
class RunCancelled:
    run_id: str
    cancelling: bool


@dataclass(frozen=True)
class AgentUnit:
    name: str
    active_state: str | None
    sub_state: str | None
    unit_file_state: str | None
    restarts: str | None
    waits_for_network_online: bool


@dataclass(frozen=True)
class CliInfo:
    provider: str
    executable: str
    path: str | None
    installed: bool
    version: str | None
    error: str | None


@dataclass(frozen=True)
class CredentialDir:
    path: str
    exists: bool
    owner: str | None = field(default=None, metadata=meta(omit_none=True))
    mode: str | None = field(default=None, metadata=meta(omit_none=True))
    ok: bool = False
    problem: str | None = None


@dataclass(frozen=True)
class Diagnostics:
    """``GET /diagnostics``: the seed's checklist answered from inside the VM."""

    pid1: str | None
    python: str
    system_state: str | None
    failed_units: list[str]
    agent_unit: AgentUnit | None
    clis: list[CliInfo]
    credential_dirs: list[CredentialDir]


@dataclass(frozen=True)
class IdentityApplied:
    """``POST /identity``: what was applied and what not (never the token or the entropy)."""

    applied: dict[str, Any]
    skipped: dict[str, str]
    hostname: str


# -- requests --------------------------------------------------------------------


@dataclass(frozen=True)
class NoRequest:
    """A route that takes nothing."""


@dataclass(frozen=True)
class StartLogin:
    """``POST /auth/{provider}``: start the CLI's login in a PTY."""

    provider: str = field(metadata=meta(where="path", **_PROVIDER))
    mode: LoginMode | None = field(default=None, metadata=meta(omit_none=True))
    wait_seconds: float = field(default=10.0, metadata=meta(**_WAIT))

    @classmethod
    def parse(cls, provider: Provider, body: dict[str, Any]) -> StartLogin:
        return cls(
            provider.name, _mode(body.get("mode"), provider), _wait(body.get("waitSeconds", 10))
        )


@dataclass(frozen=True)
class LoginQuery:
    """``GET /oauth-url`` and ``GET /credentials/status``: one login, waited on."""

    session_id: str = field(metadata=meta(where="query"))
    wait: float = field(default=0.0, metadata=meta(where="query", **_WAIT))

    @classmethod
    def parse(cls, query: dict[str, str]) -> LoginQuery:
        session_id = query.get("sessionId")
        if not session_id:
            raise BadRequest("sessionId is required", code="session_id_required")
        return cls(session_id, _wait(query.get("wait", 0)))


@dataclass(frozen=True)
class CredentialsQuery:
    """``GET /credentials``."""

    provider: str = field(metadata=meta(where="query", **_PROVIDER))

    @classmethod
    def parse(cls, query: dict[str, str]) -> CredentialsQuery:
        return cls(get_provider(query.get("provider", "")).name)


@dataclass(frozen=True)
class FileIn:
    """One credential file to write: its path under HOME and its content."""

    path: str
    content: str
    encoding: Literal["utf-8", "base64"] = "utf-8"


@dataclass(frozen=True)
class WriteCredentials:
    """``POST /credentials/write``: the files' shape here; which paths a provider allows,
    their size and the base64 itself are the store's to check (``credentials.py``)."""

    provider: str = field(metadata=meta(**_PROVIDER))
    files: list[FileIn] = field(metadata=meta(minItems=1))
    mode: LoginMode | None = field(default=None, metadata=meta(omit_none=True))

    @classmethod
    def parse(cls, body: dict[str, Any]) -> WriteCredentials:
        provider = get_provider(_str(body, "provider"))
        files = body.get("files")
        if not isinstance(files, list) or not files:
            raise BadRequest("'files' must be a non-empty list", code="invalid_files")
        parsed: list[FileIn] = []
        for entry in files:
            if not isinstance(entry, dict):
                raise BadRequest("each file must be an object", code="invalid_files")
            path, content = entry.get("path"), entry.get("content")
            if not isinstance(path, str) or not isinstance(content, str):
                raise BadRequest(
                    "each file needs string 'path' and 'content'", code="invalid_files"
                )
            encoding = entry.get("encoding", "utf-8")
            if encoding not in ("utf-8", "base64"):
                raise BadRequest("encoding must be 'utf-8' or 'base64'", code="invalid_files")
            parsed.append(FileIn(path, content, encoding))
        return cls(provider.name, parsed, _mode(body.get("mode"), provider))


@dataclass(frozen=True)
class SessionRef:
    """``GET`` or ``DELETE /sessions/{id}``."""

    session_id: str = field(metadata=meta(where="path", key="id"))


@dataclass(frozen=True)
class SubmitCode:
    """``POST /sessions/{id}/code``: what the user pasted, a code or the callback URL."""

    session_id: str = field(metadata=meta(where="path", key="id"))
    code: str | None = field(default=None, metadata=meta(omit_none=True))
    callback_url: str | None = field(default=None, metadata=meta(omit_none=True))
    wait_seconds: float = field(default=15.0, metadata=meta(**_WAIT))

    @classmethod
    def parse(cls, session_id: str, body: dict[str, Any]) -> SubmitCode:
        code, callback = body.get("code"), body.get("callbackUrl")
        if code is not None and not isinstance(code, str):
            raise BadRequest("'code' must be a string", code="invalid_body")
        if callback is not None and not isinstance(callback, str):
            raise BadRequest("'callbackUrl' must be a string", code="invalid_body")
        return cls(session_id, code, callback, _wait(body.get("waitSeconds", 15)))


@dataclass(frozen=True)
class RunOptions:
    """The run's knobs (``providers.base.PromptOptions``); None: the CLI's default."""

    wire_schema: ClassVar[dict[str, Any]] = {"additionalProperties": False}

    model: str | None = field(
        default=None, metadata=meta(omit_none=True, pattern=rf"^{MODEL.pattern}$")
    )
    permission: str | None = field(default=None, metadata=meta(omit_none=True))


@dataclass(frozen=True)
class RunPrompt:
    """``POST /prompts``: run a prompt headless; the answer streams ``RunEvent``s."""

    provider: str = field(metadata=meta(**_PROVIDER))
    prompt: str = field(metadata=meta(minLength=1, maxLength=MAX_PROMPT_CHARS))
    options: RunOptions | None = field(default=None, metadata=meta(omit_none=True))
    api_key: str | None = field(default=None, metadata=meta(omit_none=True, minLength=1))
    timeout_seconds: float | None = field(
        default=None, metadata=meta(omit_none=True, exclusiveMinimum=0)
    )

    def prompt_options(self) -> PromptOptions:
        options = self.options or RunOptions()
        permission = options.permission if options.permission is not None else "workspace-write"
        return PromptOptions(model=options.model, permission=permission)

    @classmethod
    def parse(
        cls, body: dict[str, Any], *, default_timeout: float, max_timeout: float
    ) -> RunPrompt:
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
        timeout = body.get("timeoutSeconds", default_timeout)
        if not isinstance(timeout, int | float) or not 0 < timeout <= max_timeout:
            raise BadRequest(
                f"'timeoutSeconds' must be a number in (0, {max_timeout:.0f}]",
                code="invalid_body",
            )
        return cls(provider.name, prompt, options, api_key, float(timeout))


@dataclass(frozen=True)
class RunRef:
    """``DELETE /prompts/{id}``."""

    run_id: str = field(metadata=meta(where="path", key="id"))


@dataclass(frozen=True)
class SetIdentity:
    """``POST /identity``: a clone of a golden snapshot becomes itself."""

    wire_schema: ClassVar[dict[str, Any]] = {"additionalProperties": False}

    token: str = field(metadata=meta(minLength=MIN_TOKEN, pattern=rf"^{TOKEN.pattern}$"))
    hostname: str = field(metadata=meta(pattern=rf"^{HOSTNAME.pattern}$"))
    entropy: str = field(
        metadata=meta(description=f"base64 of {MIN_ENTROPY_BYTES} to {MAX_ENTROPY_BYTES} bytes")
    )
    time: float | None = field(
        default=None, metadata=meta(omit_none=True, description="seconds since the epoch")
    )

    @classmethod
    def parse(cls, body: dict[str, Any]) -> SetIdentity:
        unknown = set(body) - {"token", "hostname", "entropy", "time"}
        if unknown:
            raise BadRequest(f"unknown fields: {', '.join(sorted(unknown))}", code="invalid_body")
        token = body.get("token")
        if not isinstance(token, str) or len(token) < MIN_TOKEN or not TOKEN.fullmatch(token):
            raise BadRequest(
                f"'token' must be at least {MIN_TOKEN} printable characters without spaces",
                code="invalid_token_value",
            )
        hostname = body.get("hostname")
        if not isinstance(hostname, str) or not HOSTNAME.fullmatch(hostname):
            raise BadRequest(
                "'hostname' must be one DNS label: a-z, 0-9 and '-', at most 63 characters",
                code="invalid_hostname",
            )
        raw = body.get("entropy")
        if not isinstance(raw, str) or not MIN_ENTROPY_BYTES <= len(_b64(raw)) <= MAX_ENTROPY_BYTES:
            raise BadRequest(
                f"'entropy' must be base64 of {MIN_ENTROPY_BYTES} to {MAX_ENTROPY_BYTES} "
                "random bytes",
                code="invalid_entropy",
            )
        when = body.get("time")
        if when is not None and (isinstance(when, bool) or not isinstance(when, int | float)):
            raise BadRequest("'time' must be seconds since the epoch", code="invalid_body")
        return cls(token, hostname, raw, float(when) if when is not None else None)

    def entropy_bytes(self) -> bytes:
        return _b64(self.entropy)


# -- the run's events ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunStarted:
    """The CLI was spawned: the first line of every run's stream."""

    type: ClassVar[str] = "run.started"
    run_id: str
    provider: str


@dataclass(frozen=True, slots=True)
class RunFinished:
    """The last line: the exit code and the credentials' content version after the run."""

    type: ClassVar[str] = "run.finished"
    run_id: str
    exit_code: int
    duration_ms: float
    credentials_version: str | None
    credentials_changed: bool


RunEvent = RunStarted | RunFinished | Event
_EVENT_TYPES: tuple[type[RunEvent], ...] = (
    RunStarted, RunFinished, SessionStarted, TextDelta, ToolUse, ToolResult, Result, Error,
)  # fmt: skip
#: Each event's class by its ``type``.
EVENTS: dict[str, type[RunEvent]] = {cls.type: cls for cls in _EVENT_TYPES}


def event_from_json(data: Any) -> RunEvent:
    """One streamed line back into its typed event (``WireError`` for anything else)."""
    kind = data.get("type") if isinstance(data, dict) else None
    cls = EVENTS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise WireError(f"a run event of unknown type {kind!r}")
    return from_json(cls, data, what=f"the {kind} event")


# -- the routes ------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """One endpoint: what it takes, what it answers, the errors it may give."""

    method: str
    path: str
    summary: str
    request: type
    #: The answer's dataclass; None: a stream of ``RunEvent``s (NDJSON).
    answer: type | None
    status: int = 200
    errors: tuple[int, ...] = ()
    public: bool = False
    #: Overrides the success answer's description ("OK").
    answered: str = "OK"


HEALTH = Route("GET", "/health", "Liveness and counts (no token)", NoRequest, Health, public=True)
START_LOGIN = Route(
    "POST", "/auth/{provider}", "Start a login in a PTY", StartLogin, Session, 201, (404,),
    answered="the login, once it left its starting phase",
)  # fmt: skip
LOGIN_URL = Route(
    "GET", "/oauth-url", "A login's URL and device code", LoginQuery, LoginUrl, errors=(404,)
)
LOGIN_STATUS = Route(
    "GET", "/credentials/status", "Whether a login has ended", LoginQuery, LoginStatus,
    errors=(404,),
)  # fmt: skip
WRITE_CREDENTIALS = Route(
    "POST", "/credentials/write", "Write a provider's credential files", WriteCredentials,
    CredentialsWritten, errors=(404,),
)  # fmt: skip
READ_CREDENTIALS = Route(
    "GET", "/credentials", "A provider's credential files and their version", CredentialsQuery,
    Credentials, errors=(404,),
)  # fmt: skip
LIST_SESSIONS = Route("GET", "/sessions", "Every login", NoRequest, Sessions)
GET_SESSION = Route("GET", "/sessions/{id}", "One login", SessionRef, Session, errors=(404,))
SUBMIT_CODE = Route(
    "POST", "/sessions/{id}/code", "Relay what the user pasted: a code or the callback URL",
    SubmitCode, Session, errors=(404, 409, 502),
)  # fmt: skip
CANCEL_SESSION = Route(
    "DELETE", "/sessions/{id}", "Cancel a login (its process group is killed)", SessionRef,
    Session, errors=(404, 409),
)  # fmt: skip
RUN_PROMPT = Route(
    "POST", "/prompts", "Run a prompt headless; NDJSON events, the first proves the CLI started",
    RunPrompt, None, errors=(404,), answered="NDJSON events",
)  # fmt: skip
LIST_RUNS = Route("GET", "/prompts", "The running prompts", NoRequest, Runs)
CANCEL_RUN = Route(
    "DELETE", "/prompts/{id}", "Cancel a running prompt", RunRef, RunCancelled, 202, (404,)
)
DIAGNOSTICS = Route(
    "GET", "/diagnostics", "The seed's checklist answered from inside the VM", NoRequest,
    Diagnostics,
)  # fmt: skip
SET_IDENTITY = Route(
    "POST", "/identity",
    "A clone of a golden snapshot becomes itself (new token, hostname, entropy, clock)",
    SetIdentity, IdentityApplied, errors=(502,),
)  # fmt: skip

#: Every route the agent serves, in the router's order.
ROUTES: tuple[Route, ...] = (
    HEALTH, START_LOGIN, LOGIN_URL, LOGIN_STATUS, WRITE_CREDENTIALS, READ_CREDENTIALS,
    LIST_SESSIONS, GET_SESSION, SUBMIT_CODE, CANCEL_SESSION, RUN_PROMPT, LIST_RUNS, CANCEL_RUN,
    DIAGNOSTICS, SET_IDENTITY,
)  # fmt: skip


# -- validation helpers (the agent's messages) -----------------------------------


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


def _options(value: Any) -> RunOptions | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BadRequest("'options' must be an object", code="invalid_body")
    unknown = set(value) - {"model", "permission"}
    if unknown:
        raise BadRequest(f"unknown options: {', '.join(sorted(unknown))}", code="invalid_option")
    model = value.get("model")
    if model is not None and (not isinstance(model, str) or not MODEL.fullmatch(model)):
        raise BadRequest("'model' must be a model name", code="invalid_option")
    permission = value.get("permission", "workspace-write")
    if not isinstance(permission, str):
        raise BadRequest("'permission' must be a string", code="invalid_option")
    PromptOptions(model=model, permission=permission)  # its own check: InvalidOption
    return RunOptions(model, value.get("permission"))


def _b64(raw: str) -> bytes:
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        return b""
