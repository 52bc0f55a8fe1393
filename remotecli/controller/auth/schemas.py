"""Request and response bodies of the login flow and the credentials API.

Secrets only ever come IN (``apiKey``, ``code``, ``callbackUrl`` are
``SecretStr``: hidden in reprs, ``writeOnly`` in the OpenAPI schema, never
echoed); nothing secret goes out. The login URL is shown to the user on
purpose: it carries no code, only the provider's public authorize query.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, SecretStr
from pydantic.alias_generators import to_camel

from remotecli.controller.apimodel import ApiModel, UserId, UtcDatetime
from remotecli.providers import PROVIDERS
from remotecli.providers.base import LoginMode

PROVIDER_NAMES: list[JsonValue] = [*sorted(PROVIDERS)]
MODE_NAMES: list[JsonValue] = [m.value for m in LoginMode]
#: Longer than any pasted code or callback URL; the agent refuses 8 KiB URLs too.
MAX_ANSWER_CHARS = 8192


class AuthStart(ApiModel):
    """``POST /api/auth/start``: the seed's ``{"userId", "provider"}``, plus mode and key."""

    user_id: UserId = Field(alias="userId", examples=["5abacdd1-6a9b-48ce-b723-ca8056324c7a"])
    # A plain string checked by the flow, so an unknown name gets its own
    # code (unknown_provider) and the list of known ones.
    provider: str = Field(
        max_length=64, json_schema_extra={"enum": PROVIDER_NAMES}, examples=["claude_code"]
    )
    mode: str | None = Field(
        default=None,
        max_length=64,
        json_schema_extra={"enum": MODE_NAMES},
        description="Default: the provider's first mode (claude_code, gemini_cli: paste_code; "
        "codex: localhost_callback). api_key stores 'apiKey' and needs no VM.",
    )
    api_key: SecretStr | None = Field(
        default=None,
        alias="apiKey",
        max_length=4096,
        description="Only with mode api_key: the provider's API key (stored encrypted).",
    )


class CodeSubmit(ApiModel):
    """What the user pasted: exactly one of the two."""

    code: SecretStr | None = Field(
        default=None,
        max_length=MAX_ANSWER_CHARS,
        description="paste_code logins: the code the provider's page showed (Claude: code#state).",
    )
    callback_url: SecretStr | None = Field(
        default=None,
        alias="callbackUrl",
        max_length=MAX_ANSWER_CHARS,
        description="localhost_callback logins (Codex): the whole http://localhost:1455/... "
        "address from the browser's address bar after signing in.",
    )


class CamelOut(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class SessionError(CamelOut):
    code: str
    message: str
    #: Structured evidence (e.g. the VM's readiness report when it never got ready).
    detail: dict[str, Any] | None = None


class AuthSessionOut(CamelOut):
    id: str = Field(examples=["auth_3f9c0a1b2c3d4e5f"])
    user_id: str
    provider: str
    mode: str
    phase: str = Field(
        description="claiming_vm → starting_login → awaiting_user ⇄ verifying → capturing → "
        "authenticated; or failed / cancelled / expired (see 'error')."
    )
    ended: bool
    login_url: str | None = Field(
        default=None, description="Open in a new tab (providers forbid iframes)."
    )
    user_code: str | None = Field(default=None, description="Device logins: enter it at the URL.")
    instructions: str | None = None
    #: What to POST to .../code next: "code", "callbackUrl", or null (nothing to paste).
    expects: Literal["code", "callbackUrl"] | None = None
    vm_id: str | None = None
    vm_origin: str | None = Field(default=None, description="pool, restore or cold")
    timings: dict[str, float] = Field(
        default_factory=dict,
        description="Milliseconds from the start request: claimMs (VM claim), urlMs (click → "
        "login URL), authenticatedMs, endedMs; agentUrlMs is the CLI's own spawn → URL.",
    )
    error: SessionError | None = None
    created_at: UtcDatetime
    updated_at: UtcDatetime
    expires_at: UtcDatetime


class CredentialOut(CamelOut):
    provider: str
    state: Literal["connected", "expired", "needs_login"]
    kind: Literal["oauth", "api_key"]
    version: int
    expires_at: UtcDatetime | None = Field(
        default=None, description="The access token's expiry, when the files say it."
    )
    updated_at: UtcDatetime


class CredentialsDeleted(CamelOut):
    provider: str
    deleted_versions: int
