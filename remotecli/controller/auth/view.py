"""How a session row is shown (pure; no IO), and the agent's phases in ours.

``AuthPhase`` and its moves live in ``states.py``. The agent's own login
phases map onto ours with ``AGENT_PHASES``; the agent's "authenticated"
becomes our "capturing" until the files are in the vault.
"""

from __future__ import annotations

from typing import Literal

from remotecli.agent.wire import LoginPhase
from remotecli.controller.auth.schemas import AuthSessionOut, SessionError
from remotecli.controller.auth.states import AuthPhase
from remotecli.controller.db.models import AuthSession
from remotecli.providers.base import LoginMode

#: The agent's login phase (the wire's ``LoginPhase``) → ours.
AGENT_PHASES: dict[LoginPhase, AuthPhase] = {
    LoginPhase.STARTING: AuthPhase.STARTING_LOGIN,
    LoginPhase.AWAITING_USER: AuthPhase.AWAITING_USER,
    LoginPhase.VERIFYING: AuthPhase.VERIFYING,
    LoginPhase.AUTHENTICATED: AuthPhase.CAPTURING,
    LoginPhase.FAILED: AuthPhase.FAILED,
    LoginPhase.CANCELLED: AuthPhase.CANCELLED,
    LoginPhase.EXPIRED: AuthPhase.EXPIRED,
}


def expects(mode: str, phase: AuthPhase) -> Literal["code", "callbackUrl"] | None:
    """What the user should paste now, if anything."""
    if phase is not AuthPhase.AWAITING_USER:
        return None
    if mode == LoginMode.PASTE_CODE:
        return "code"
    if mode == LoginMode.LOCALHOST_CALLBACK:
        return "callbackUrl"
    return None


def session_out(row: AuthSession) -> AuthSessionOut:
    phase = row.phase
    error = None
    if row.error_code is not None:
        error = SessionError(
            code=row.error_code, message=row.error_message or "", detail=row.error_detail
        )
    timings = dict(row.timings or {})
    origin = timings.pop("vmOrigin", None)
    return AuthSessionOut(
        id=row.id,
        user_id=row.user_id,
        provider=row.provider,
        mode=row.mode,
        phase=phase.value,
        ended=phase.ended,
        login_url=row.login_url,
        user_code=row.user_code,
        instructions=row.instructions,
        expects=expects(row.mode, phase),
        vm_id=row.vm_id,
        vm_origin=origin if isinstance(origin, str) else None,
        timings={k: float(v) for k, v in timings.items() if isinstance(v, int | float)},
        error=error,
        created_at=row.created_at,
        updated_at=row.updated_at,
        expires_at=row.expires_at,
    )
