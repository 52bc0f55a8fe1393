"""A prompt run's data: what was asked, what the stream said, what the caller is told.

Pure (no IO): ``prompt_run.py`` does the work and feeds every agent event
through ``Outcome.observe``; the status, the stored error and the messages
that tell a user what to do come from here, and ``AgentFailed`` (a
``BadGateway``, 502; the tree is drawn in ``controller/errors.py``): the
agent refused or broke a run.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from remotecli.agent import wire
from remotecli.agent.codec import to_json
from remotecli.controller.db.models import Credential
from remotecli.controller.errors import ApiError, BadGateway, BadRequest, Conflict
from remotecli.controller.prompts.states import RunStatus
from remotecli.controller.vault.states import CredentialState
from remotecli.errors import RemoteCliError
from remotecli.providers import get_provider
from remotecli.providers.events import Error, Result
from remotecli.vmm.agentclient import AgentRequestError

#: The agent's codes for "the stored sign-in no longer works".
LOGIN_AGAIN = frozenset({"auth_required", "refresh_failed"})


@dataclass(frozen=True)
class RunSpec:
    user_id: str
    provider: str
    prompt: str = field(repr=False)  # the user's words: never logged or stored
    options: dict[str, Any] | None = None
    timeout_seconds: float = 600.0
    group_id: str | None = None


@dataclass
class Outcome:
    """What the stream said, as it went by."""

    exit_code: int | None = None
    finished: bool = False  # run.finished arrived
    credentials_changed: bool | None = None
    error: tuple[str, str] | None = None  # the first fatal (code, message)
    login_again: str | None = None  # the agent's code when the sign-in is dead
    result_is_error: bool = False
    usage: dict[str, Any] | None = None
    cost_usd: float | None = None
    agent_duration_ms: float | None = None

    def observe(self, event: wire.RunEvent) -> bool:
        """Note what matters for the finish; True when the event goes out to the client."""
        out = self
        if isinstance(event, wire.RunStarted):
            return False
        if isinstance(event, wire.RunFinished):
            out.finished = True
            out.exit_code = event.exit_code
            out.credentials_changed = event.credentials_changed
            out.agent_duration_ms = float(event.duration_ms)
            return False
        if isinstance(event, Result):
            out.result_is_error = event.is_error
            out.usage = to_json(event.usage)
            out.cost_usd = float(event.cost_usd) if event.cost_usd is not None else None
        elif isinstance(event, Error):
            code = event.code or "cli_error"
            if code in LOGIN_AGAIN:
                out.login_again = code
            if code != "warning" and out.error is None:
                out.error = (code, event.message)
        return True

    def status(self, *, cancelled: bool) -> RunStatus:
        if cancelled or (self.error is not None and self.error[0] == "cancelled"):
            return RunStatus.CANCELLED
        if self.exit_code == 0 and self.error is None and not self.result_is_error:
            return RunStatus.SUCCEEDED
        return RunStatus.FAILED


class AgentFailed(BadGateway):
    code = "agent_error"


def from_agent(exc: AgentRequestError) -> ApiError:
    """The agent refused the run: its 4xx (a bad option, ...) is the caller's; the rest ours."""
    if 400 <= exc.status < 500 and exc.status not in (401, 403):
        return BadRequest(exc.message, code=exc.code)
    return AgentFailed(f"the VM's agent failed the run ({exc.code}): {exc.message}")


def check_usable(spec: RunSpec, record: Credential | None) -> None:
    name = get_provider(spec.provider).display_name
    start = f'POST /api/auth/start {{"userId": "{spec.user_id}", "provider": "{spec.provider}"}}'
    if record is None:
        raise Conflict(
            f"user {spec.user_id!r} has not connected {name}: log in first with {start}",
            code="not_connected", provider=spec.provider,
        )  # fmt: skip
    if record.state is CredentialState.NEEDS_LOGIN:
        raise Conflict(
            f"{name} refused this user's stored sign-in (its refresh failed): log in again "
            f"with {start}; the old credentials are kept until then",
            code="needs_login", provider=spec.provider,
        )  # fmt: skip


def login_again_message(spec: RunSpec, code: str) -> str:
    name = get_provider(spec.provider).display_name
    return (
        f"{name} no longer accepts this user's sign-in ({code}): the user must log in again "
        f'with POST /api/auth/start {{"userId": "{spec.user_id}", "provider": '
        f'"{spec.provider}"}}. The stored credentials are kept, marked needs_login.'
    )


def code_message(exc: BaseException) -> tuple[str, str]:
    if isinstance(exc, RemoteCliError):
        return exc.code, exc.message
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled", "the controller stopped before the run started"
    return "internal_error", f"unexpected {exc.__class__.__name__} (see the controller's log)"


def public_error(exc: BaseException) -> dict[str, Any]:
    """The SSE error event for a failed setup (``to_dict`` never holds a secret)."""
    body = exc.to_dict() if isinstance(exc, RemoteCliError) else {}
    code, message = code_message(exc)
    return {**body, "type": "error", "code": code, "message": message}
