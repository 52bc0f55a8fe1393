"""What a login request may ask for, and how the flow's failures answer over HTTP (pure).

Everything a start can get wrong is found here before anything is written;
the agent's verdicts on a pasted answer keep the agent's own code.
"""

from __future__ import annotations

from remotecli.controller.db.models import AuthSession
from remotecli.controller.errors import (
    ApiError,
    BadGateway,
    BadRequest,
    Conflict,
    PayloadTooLarge,
    Unavailable,
    Unprocessable,
)
from remotecli.errors import BackendUnavailable, NotReady
from remotecli.providers import PROVIDERS, Provider, UnknownProvider, get_provider
from remotecli.providers.base import LoginMode
from remotecli.vmm.agentclient import AgentRequestError

#: Agent statuses relayed as they are (as our error of that status): the user's answer
#: was wrong, or too early.
RELAYED: dict[int, type[ApiError]] = {
    400: BadRequest,
    409: Conflict,
    413: PayloadTooLarge,
    422: Unprocessable,
}


def resolve_provider(name: str) -> Provider:
    try:
        return get_provider(name)
    except UnknownProvider:
        raise BadRequest(
            f"unknown provider {name!r}; choose one of: {', '.join(sorted(PROVIDERS))}",
            code="unknown_provider",
        ) from None


def resolve_mode(provider: Provider, requested: str | None, has_key: bool) -> LoginMode:
    """The login mode asked for; none means the provider's first (API key if a key came)."""
    if requested is None:
        return LoginMode.API_KEY if has_key else provider.login_modes[0]
    try:
        mode: LoginMode | None = LoginMode(requested)
    except ValueError:
        mode = None
    if mode is None or mode not in provider.login_modes:
        modes = ", ".join(m.value for m in provider.login_modes)
        raise BadRequest(
            f"{provider.display_name} has no {requested!r} login; choose one of: {modes}",
            code="unsupported_login_mode",
        )
    if mode is LoginMode.API_KEY and not has_key:
        raise BadRequest(
            "mode 'api_key' needs 'apiKey': the provider's API key", code="api_key_required"
        )
    if mode is not LoginMode.API_KEY and has_key:
        raise BadRequest(
            f"'apiKey' is only for mode 'api_key', not {mode.value!r}",
            code="api_key_not_expected",
        )
    return mode


def relay_error(exc: AgentRequestError) -> ApiError:
    """The agent's verdict on the user's answer, with its own code (state_mismatch, ...)."""
    relayed = RELAYED.get(exc.status)
    if relayed is not None:
        return relayed(exc.message, code=exc.code)
    if exc.status == 404:
        return Conflict(
            "the login VM no longer knows this login; start a new one", code="login_lost"
        )
    return BadGateway(f"the login VM's agent failed: {exc.message}", code=exc.code)


def start_failed(row: AuthSession) -> ApiError:
    """The start's answer when the login failed before showing a URL.

    The session's own error, with its evidence spread at the top as in
    ``NotReady.to_dict()`` (a VM that never got ready, or no backend here:
    ``Unavailable``, 503; anything else: ``BadGateway``, 502), and the session
    id so the caller can look at it again. The row keeps only the error's code,
    so the code picks the type.
    """
    code = row.error_code or "login_failed"
    error = Unavailable if code in (NotReady.code, BackendUnavailable.code) else BadGateway
    detail = {k: v for k, v in (row.error_detail or {}).items() if k not in ("code", "message")}
    return error(
        row.error_message or "the login failed",
        code=code,
        sessionId=row.id,
        **detail,
    )
