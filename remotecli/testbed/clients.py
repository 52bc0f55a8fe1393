"""The three OAuth clients the fake authorization server knows, one per CLI.

Client ids and scopes are the real CLIs' own (read from the pinned packages),
so URLs printed by the fakes look like the real ones; redirect URIs point at
the test bed instead of the providers' hosts. Stdlib only.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

PROVIDERS: tuple[str, ...] = ("claude", "codex", "gemini")

CLAUDE_CLIENT_ID = "9d1c250a-e61b-44d9-88ed-5944d1962f5e"
CODEX_CLIENT_ID = "app_EMoamEEZ73f0CkXaXp7hrann"
GEMINI_CLIENT_ID = "681255809395-oo8ft2oprdrnp9e3aqf6av3hmdib135j.apps.googleusercontent.com"

#: Claude's scope table; a short sign-in link encodes scopes as bits of this list
#: (index i -> bit ``2 << i``), as the real CLI does.
CLAUDE_SCOPE_TABLE: tuple[str, ...] = (
    "org:create_api_key",
    "user:profile",
    "user:inference",
    "user:sessions:claude_code",
    "user:mcp_servers",
    "user:file_upload",
    "user:plugins",
    "user:projects:read",
    "user:projects:write",
    "user:privacy_consents:write",
    "org:desktop_config",
)
#: What ``claude auth login`` asks for (claude 2.1.332, measured).
CLAUDE_LOGIN_SCOPES: tuple[str, ...] = (
    "org:create_api_key",
    "user:profile",
    "user:inference",
    "user:sessions:claude_code",
    "user:mcp_servers",
    "user:file_upload",
    "user:plugins",
    "user:privacy_consents:write",
    "org:desktop_config",
)
CODEX_SCOPES: tuple[str, ...] = (
    "openid",
    "profile",
    "email",
    "offline_access",
    "api.connectors.read",
    "api.connectors.invoke",
)
GEMINI_SCOPES: tuple[str, ...] = (
    "https://www.googleapis.com/auth/cloud-platform",
    "https://www.googleapis.com/auth/userinfo.email",
    "https://www.googleapis.com/auth/userinfo.profile",
)

#: The ports ``codex login`` listens on (the second when the first is taken).
CODEX_CALLBACK_PORTS: tuple[int, ...] = (1455, 1457)


@dataclass(frozen=True, slots=True)
class ClientSpec:
    """How one provider's authorization server behaves for its CLI's client."""

    provider: str
    client_id: str
    default_scopes: tuple[str, ...]
    #: Refresh tokens are single-use and each refresh returns a new one
    #: (Claude, Codex); Google returns the same refresh token every time.
    rotates_refresh_tokens: bool
    #: A new login for the same user revokes that user's earlier chains (Codex).
    one_chain_per_user: bool
    #: The token response carries an OpenID id_token (Codex, Gemini).
    issues_id_token: bool
    access_prefix: str
    refresh_prefix: str

    def redirect_uris(self, base_url: str) -> tuple[str, ...]:
        """The redirect URIs this client registered (the test bed's own pages for paste flows)."""
        if self.provider == "claude":
            return (f"{base_url}/claude/oauth/code/callback",)
        if self.provider == "gemini":
            return (f"{base_url}/gemini/authcode",)
        # codex: the CLI's own loopback listener. The real 0.171.0 sends
        # 127.0.0.1; earlier releases sent localhost: both are registered.
        return tuple(
            f"http://{host}:{port}/auth/callback"
            for port in CODEX_CALLBACK_PORTS
            for host in ("localhost", "127.0.0.1")
        )


CLIENTS: dict[str, ClientSpec] = {
    "claude": ClientSpec(
        provider="claude",
        client_id=CLAUDE_CLIENT_ID,
        default_scopes=CLAUDE_LOGIN_SCOPES,
        rotates_refresh_tokens=True,
        one_chain_per_user=False,
        issues_id_token=False,
        access_prefix="sk-ant-oat01-",
        refresh_prefix="sk-ant-ort01-",
    ),
    "codex": ClientSpec(
        provider="codex",
        client_id=CODEX_CLIENT_ID,
        default_scopes=CODEX_SCOPES,
        rotates_refresh_tokens=True,
        one_chain_per_user=True,
        issues_id_token=True,
        access_prefix="",  # codex access tokens are JWTs
        refresh_prefix="rt_",
    ),
    "gemini": ClientSpec(
        provider="gemini",
        client_id=GEMINI_CLIENT_ID,
        default_scopes=GEMINI_SCOPES,
        rotates_refresh_tokens=False,
        one_chain_per_user=False,
        issues_id_token=True,
        access_prefix="ya29.",
        refresh_prefix="1//",
    ),
}


def account_id(provider: str, email: str) -> str:
    """A stable account id for ``email`` at ``provider`` (same user, same id, every run)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"remotecli-testbed:{provider}:{email}"))


def google_sub(email: str) -> str:
    """Google's numeric subject identifier, derived from the email."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"google:{email}").int)[:21]


def encode_claude_short_link(client_index: int, scopes: list[str], code_challenge: str) -> str:
    """The query of Claude's short sign-in link: scope bits in base64 digits, then the challenge.

    Mirrors claude 2.1.332: ``n = client_index | sum(2 << table.index(s))`` written
    most-significant digit first in ``A-Za-z0-9-_``, then the 43-char challenge.
    """
    n = client_index
    for scope in scopes:
        n |= 2 << CLAUDE_SCOPE_TABLE.index(scope)
    digits = ""
    while True:
        digits = _B64_DIGITS[n % 64] + digits
        n >>= 6
        if n == 0:
            break
    return digits + code_challenge


def decode_claude_short_link(query: str) -> tuple[int, list[str], str] | None:
    """Inverse of ``encode_claude_short_link``; ``None`` when ``query`` is not one."""
    if len(query) <= 43 or "=" in query or "&" in query:
        return None
    digits, challenge = query[:-43], query[-43:]
    if any(c not in _B64_DIGITS for c in query):
        return None
    n = 0
    for c in digits:
        n = n * 64 + _B64_DIGITS.index(c)
    scopes = [s for i, s in enumerate(CLAUDE_SCOPE_TABLE) if n & (2 << i)]
    return n & 1, scopes, challenge


_B64_DIGITS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
