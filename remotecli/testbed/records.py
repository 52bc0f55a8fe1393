"""The records the fake authorization server keeps, and its error type.

Stdlib only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: OpenAI's refresh failures, as auth.openai.com words them (codex reads ``error.code``).
CODEX_REFRESH_ERRORS: dict[str, str] = {
    "refresh_token_reused": (
        "Your refresh token has already been used to generate a new access token. "
        "Please try signing in again."
    ),
    "refresh_token_expired": ("Your refresh token has expired. Please try signing in again."),
    "refresh_token_invalidated": (
        "Your refresh token has been invalidated. Please try signing in again."
    ),
}


class OAuthError(Exception):
    """An OAuth error response: ``error`` code, human description, HTTP status.

    ``openai_code`` marks Codex refresh failures, whose body is OpenAI's error
    object (``{"error": {"message", "type", "param", "code"}}``) with status 401.
    """

    def __init__(
        self, error: str, description: str, status: int = 400, openai_code: str | None = None
    ) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status
        self.openai_code = openai_code

    def body(self) -> dict[str, Any]:
        if self.openai_code is not None:
            return {
                "error": {
                    "message": self.description,
                    "type": "invalid_request_error",
                    "param": None,
                    "code": self.openai_code,
                }
            }
        return {"error": self.error, "error_description": self.description}


@dataclass(frozen=True, slots=True)
class AuthorizeRequest:
    """A validated ``/authorize`` request (what the login form carries in hidden fields)."""

    provider: str
    client_id: str
    redirect_uri: str
    scope: str
    state: str
    code_challenge: str

    def form_fields(self) -> dict[str, str]:
        return {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": self.scope,
            "state": self.state,
            "code_challenge": self.code_challenge,
            "code_challenge_method": "S256",
        }


@dataclass(slots=True)
class Grant:
    """One login: the root of a chain of tokens."""

    id: str
    provider: str
    email: str
    scope: str
    created_at: float
    revoked_reason: str | None = None


@dataclass(slots=True)
class CodeRecord:
    code: str
    request: AuthorizeRequest
    email: str
    expires_at: float
    grant_id: str | None = None  # set once exchanged: a replay revokes that grant


@dataclass(slots=True)
class AccessRecord:
    token: str
    grant_id: str
    expires_at: float


@dataclass(slots=True)
class RefreshRecord:
    token: str
    grant_id: str
    expires_at: float
    used_at: float | None = None


@dataclass(slots=True)
class DeviceRecord:
    device_code: str
    user_code: str
    provider: str
    scope: str
    expires_at: float
    interval: float
    status: str = "pending"  # pending | approved | denied | consumed
    email: str | None = None
    last_poll: float | None = None


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A snapshot of one token pair the server issued, for test assertions."""

    provider: str
    email: str
    grant_id: str
    access_token: str
    refresh_token: str
    access_expires_at: float
    #: How it was obtained: ``authorization_code``, ``device_code`` or ``refresh_token``.
    via: str
    #: The chain was revoked (reuse detected, ``revoke_all``, a newer Codex login).
    revoked: bool
    #: The refresh token was spent on a rotation (always False for Gemini).
    refresh_used: bool


@dataclass(slots=True)
class IssueRecord:
    provider: str
    grant_id: str
    access: str
    refresh: str
    via: str
