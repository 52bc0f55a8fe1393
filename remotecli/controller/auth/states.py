"""A login session's phases and the moves a login has.

``AuthPhase`` moves only along ``AUTH_TRANSITIONS`` (``SessionRows.write``
checks every change); every other change is a bug and raises::

    CLAIMING_VM ─▶ STARTING_LOGIN ─▶ AWAITING_USER ◀─▶ VERIFYING
                          │                 │               │
                          └─────────────────┴───────────────┴─▶ CAPTURING ─▶ AUTHENTICATED

and from any phase before AUTHENTICATED: FAILED, CANCELLED or EXPIRED.
"""

from __future__ import annotations

from remotecli.states import State, transitions


class AuthPhase(State):
    CLAIMING_VM = "claiming_vm"
    STARTING_LOGIN = "starting_login"
    AWAITING_USER = "awaiting_user"
    VERIFYING = "verifying"
    CAPTURING = "capturing"
    AUTHENTICATED = "authenticated"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @property
    def ended(self) -> bool:
        return self in (self.AUTHENTICATED, self.FAILED, self.CANCELLED, self.EXPIRED)


_ENDINGS = {AuthPhase.FAILED, AuthPhase.CANCELLED, AuthPhase.EXPIRED}
AUTH_TRANSITIONS = transitions(
    AuthPhase,
    {
        AuthPhase.CLAIMING_VM: {AuthPhase.STARTING_LOGIN, *_ENDINGS},
        AuthPhase.STARTING_LOGIN: {AuthPhase.AWAITING_USER, AuthPhase.CAPTURING, *_ENDINGS},
        AuthPhase.AWAITING_USER: {AuthPhase.VERIFYING, AuthPhase.CAPTURING, *_ENDINGS},
        AuthPhase.VERIFYING: {AuthPhase.AWAITING_USER, AuthPhase.CAPTURING, *_ENDINGS},
        AuthPhase.CAPTURING: {AuthPhase.AUTHENTICATED, *_ENDINGS},
        AuthPhase.AUTHENTICATED: set(),
        AuthPhase.FAILED: set(),
        AuthPhase.CANCELLED: set(),
        AuthPhase.EXPIRED: set(),
    },
    subject="auth session",
)
