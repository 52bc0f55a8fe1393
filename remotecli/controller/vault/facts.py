"""What a provider's credential files say about themselves: when they expire, whether they work.

Pure functions over the file contents (path relative to HOME → bytes), one
per provider, so the vault can show "connected / expired / needs login"
without running the CLI. The shapes are undocumented internals of each CLI
(see the providers research notes), so every reader is
tolerant: a field it does not find yields "unknown expiry", never an error —
a CLI release that moves a field must not make a working login look broken.

- Claude Code ``.claude/.credentials.json``: ``claudeAiOauth.expiresAt`` (ms).
- Codex ``.codex/auth.json``: the ``exp`` claim of ``tokens.id_token`` (a JWT);
  without it, ``last_refresh`` + 8 days, the age at which Codex refreshes.
  An ``OPENAI_API_KEY`` login does not expire.
- Gemini CLI ``.gemini/oauth_creds.json``: ``expiry_date`` (ms).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from remotecli.controller.db.models import CredentialState

CLAUDE_FILE = ".claude/.credentials.json"
CODEX_FILE = ".codex/auth.json"
GEMINI_FILE = ".gemini/oauth_creds.json"
#: Codex refreshes its tokens once ``last_refresh`` is this old (codex-rs
#: ``TOKEN_REFRESH_INTERVAL``): the best expiry we have without an id token.
CODEX_REFRESH_INTERVAL = timedelta(days=8)


@dataclass(frozen=True)
class FileFacts:
    """``usable``: the files hold a login the CLI can use (or refresh)."""

    usable: bool
    expires_at: datetime | None = None

    def state(self, now: datetime) -> CredentialState:
        """The state at ``now``: an access token past its expiry may still refresh."""
        if not self.usable:
            return CredentialState.NEEDS_LOGIN
        if self.expires_at is not None and self.expires_at <= now:
            return CredentialState.EXPIRED
        return CredentialState.CONNECTED


def _json(files: Mapping[str, bytes], path: str) -> dict[str, Any] | None:
    data = files.get(path)
    if data is None:
        return None
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _from_ms(value: Any) -> datetime | None:
    # bool is an int in Python; a JSON true is not a timestamp.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return datetime.fromtimestamp(value / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _from_seconds(value: Any) -> datetime | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return _from_ms(value * 1000)


def _from_rfc3339(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def jwt_claims(token: Any) -> dict[str, Any]:
    """The payload of a JWT without verifying it (we only read its expiry); {} if not a JWT."""
    if not isinstance(token, str) or token.count(".") != 2:
        return {}
    payload = token.split(".")[1]
    try:
        value = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def claude_facts(files: Mapping[str, bytes]) -> FileFacts:
    oauth = (_json(files, CLAUDE_FILE) or {}).get("claudeAiOauth")
    if not isinstance(oauth, dict):
        return FileFacts(usable=False)
    usable = bool(oauth.get("accessToken") or oauth.get("refreshToken"))
    return FileFacts(usable, _from_ms(oauth.get("expiresAt")))


def codex_facts(files: Mapping[str, bytes]) -> FileFacts:
    auth = _json(files, CODEX_FILE)
    if auth is None:
        return FileFacts(usable=False)
    if auth.get("OPENAI_API_KEY"):
        return FileFacts(usable=True)  # API-key login: nothing expires
    tokens = auth.get("tokens")
    if not isinstance(tokens, dict) or not (
        tokens.get("access_token") or tokens.get("refresh_token")
    ):
        return FileFacts(usable=False)
    expires = _from_seconds(jwt_claims(tokens.get("id_token")).get("exp"))
    if expires is None:
        refreshed = _from_rfc3339(auth.get("last_refresh"))
        expires = refreshed + CODEX_REFRESH_INTERVAL if refreshed else None
    return FileFacts(usable=True, expires_at=expires)


def gemini_facts(files: Mapping[str, bytes]) -> FileFacts:
    creds = _json(files, GEMINI_FILE)
    if creds is None or not (creds.get("access_token") or creds.get("refresh_token")):
        return FileFacts(usable=False)
    return FileFacts(usable=True, expires_at=_from_ms(creds.get("expiry_date")))


READERS: dict[str, Callable[[Mapping[str, bytes]], FileFacts]] = {
    "claude_code": claude_facts,
    "codex": codex_facts,
    "gemini_cli": gemini_facts,
}


def facts_for(provider: str, files: Mapping[str, bytes]) -> FileFacts:
    """What ``files`` (path → content) of ``provider`` say; unknown providers: usable, no expiry."""
    reader = READERS.get(provider)
    return reader(files) if reader else FileFacts(usable=True)
