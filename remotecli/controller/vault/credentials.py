"""The vault's records: a user's credentials per provider, encrypted, one row per version.

A login captures the CLI's credential files (the agent's ``GET /credentials``)
and stores them as a NEW version for (user, provider); so will every
sync-back after a prompt run once refresh tokens rotate. The payload (the
files, or ``{"apiKey": ...}`` in API-key mode) is JSON sealed with the vault;
the AAD binds it to ``credential|user|provider|version`` so a ciphertext
copied to another row does not open. Everything needed to show the
credential without opening it — kind, state, expiry, the agent's content
version — is stored beside it in the clear.

Callers pass their own ``AsyncSession`` (the change commits with theirs).
Nothing here logs; nothing returns a secret except ``open_secret`` /
``open_files``, whose results go only to an agent. Files that cannot be
stored (incomplete, malformed) are a ``CaptureError`` (a ``RemoteCliError``,
in the tree drawn in ``remotecli/errors.py``).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete as sql_delete
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from remotecli.agent.wire import FileIn
from remotecli.controller.db.models import Credential, User, utcnow
from remotecli.controller.vault.cipher import Sealed, Vault
from remotecli.controller.vault.facts import FileFacts, facts_for
from remotecli.controller.vault.states import CredentialKind, CredentialState
from remotecli.errors import RemoteCliError

#: Old versions kept per (user, provider) besides the current one: enough to
#: go back after a bad sync-back, few enough that dead (rotated) refresh
#: tokens do not pile up in the database.
KEEP_OLD_VERSIONS = 4
#: Longer than any provider's key; a bound so a paste accident is refused.
MAX_API_KEY_CHARS = 4096


class CaptureError(RemoteCliError):
    """The agent's credential files cannot be stored (incomplete or malformed)."""

    code = "capture_failed"


@dataclass(frozen=True, repr=False)
class StoredFile:
    """One credential file as the agent gave it (``encoding``: ``utf-8`` or ``base64``)."""

    path: str
    content: str
    encoding: str = "utf-8"
    mode: str = "0600"

    def __repr__(self) -> str:  # contents are secret
        return f"StoredFile({self.path!r}, mode={self.mode})"

    def data(self) -> bytes:
        if self.encoding == "base64":
            return base64.b64decode(self.content, validate=True)
        return self.content.encode()

    def to_agent(self) -> FileIn:
        """The entry for the agent's ``POST /credentials/write``."""
        return FileIn(self.path, self.content, "base64" if self.encoding == "base64" else "utf-8")


@dataclass(frozen=True, repr=False)
class Secret:
    """An opened record: the files (OAuth) or the key (API-key mode)."""

    kind: CredentialKind
    files: tuple[StoredFile, ...] = ()
    api_key: str | None = None

    def __repr__(self) -> str:
        return f"Secret({self.kind.value}, files={[f.path for f in self.files]})"


def aad(user_id: str, provider: str, version: int) -> str:
    return f"credential|{user_id}|{provider}|{version}"


def parse_captured(provider: str, body: Mapping[str, Any]) -> tuple[list[StoredFile], str | None]:
    """Validate the agent's ``GET /credentials`` answer; return the files and content version."""
    if body.get("provider") != provider:
        raise CaptureError(
            f"the agent returned credentials of {body.get('provider')!r}, not {provider!r}"
        )
    if not body.get("complete"):
        missing = ", ".join(str(m) for m in body.get("missing") or []) or "unknown"
        raise CaptureError(
            f"the CLI did not write all its credential files (missing: {missing}); "
            "start the login again"
        )
    files: list[StoredFile] = []
    for entry in body.get("files") or []:
        if not isinstance(entry, dict) or not all(
            isinstance(entry.get(k), str) for k in ("path", "content")
        ):
            raise CaptureError("the agent returned a malformed credential file entry")
        encoding = str(entry.get("encoding", "utf-8"))
        if encoding not in ("utf-8", "base64"):
            raise CaptureError(f"unknown credential file encoding {encoding!r}")
        file = StoredFile(entry["path"], entry["content"], encoding, str(entry.get("mode", "0600")))
        try:
            file.data()
        except (binascii.Error, ValueError) as exc:
            raise CaptureError(f"credential file {file.path!r} is not valid base64") from exc
        files.append(file)
    if not files:
        raise CaptureError("the agent returned no credential files; start the login again")
    version = body.get("version")
    return files, version if isinstance(version, str) else None


def facts_of(provider: str, files: list[StoredFile] | tuple[StoredFile, ...]) -> FileFacts:
    return facts_for(provider, {f.path: f.data() for f in files})


async def current(session: AsyncSession, user_id: str, provider: str) -> Credential | None:
    """The newest version for (user, provider), or None."""
    result = await session.execute(
        select(Credential)
        .where(Credential.user_id == user_id, Credential.provider == provider)
        .order_by(Credential.version.desc())
        .limit(1)
    )
    return result.scalar_one_or_none()


async def list_for_user(session: AsyncSession, user_id: str) -> list[Credential]:
    """The current version of each provider the user has credentials for, by provider."""
    newest = (
        select(Credential.provider, func.max(Credential.version).label("version"))
        .where(Credential.user_id == user_id)
        .group_by(Credential.provider)
        .subquery()
    )
    result = await session.execute(
        select(Credential)
        .join(
            newest,
            (Credential.provider == newest.c.provider) & (Credential.version == newest.c.version),
        )
        .where(Credential.user_id == user_id)
        .order_by(Credential.provider)
    )
    return list(result.scalars())


async def store_files(
    session: AsyncSession,
    vault: Vault,
    user_id: str,
    provider: str,
    captured: Mapping[str, Any],
) -> Credential:
    """Store the agent's captured files as a new version (unchanged files add none).

    An unchanged set (same content version as the current record) returns the
    current record: a sync-back after a run that refreshed nothing is a no-op.
    """
    files, content_version = parse_captured(provider, captured)
    latest = await current(session, user_id, provider)
    if (
        latest is not None
        and content_version is not None
        and latest.kind is CredentialKind.OAUTH
        and latest.content_version == content_version
    ):
        return latest
    facts = facts_of(provider, files)
    payload = {
        "files": [
            {"path": f.path, "content": f.content, "encoding": f.encoding, "mode": f.mode}
            for f in files
        ]
    }
    return await _add_version(
        session,
        vault,
        user_id,
        provider,
        CredentialKind.OAUTH,
        payload,
        content_version=content_version,
        # Only the lasting verdict is stored; "expired" is computed when shown.
        state=CredentialState.CONNECTED if facts.usable else CredentialState.NEEDS_LOGIN,
        expires_at=facts.expires_at,
    )


def check_api_key(api_key: str | None) -> str:
    """The key without surrounding whitespace; ValueError (safe to show) when unusable."""
    key = (api_key or "").strip()
    if not key:
        raise ValueError("'apiKey' is empty: paste the provider's API key")
    if len(key) > MAX_API_KEY_CHARS or any(c.isspace() for c in key):
        raise ValueError("'apiKey' does not look like an API key (too long or contains spaces)")
    return key


async def store_api_key(
    session: AsyncSession, vault: Vault, user_id: str, provider: str, api_key: str
) -> Credential:
    key = check_api_key(api_key)
    return await _add_version(
        session,
        vault,
        user_id,
        provider,
        CredentialKind.API_KEY,
        {"apiKey": key},
        content_version=None,
        state=CredentialState.CONNECTED,
        expires_at=None,
    )


async def _add_version(
    session: AsyncSession,
    vault: Vault,
    user_id: str,
    provider: str,
    kind: CredentialKind,
    payload: dict[str, Any],
    *,
    content_version: str | None,
    state: CredentialState,
    expires_at: datetime | None,
) -> Credential:
    # Serialises version numbers per user on PostgreSQL (SQLite has one writer
    # anyway); the unique (user, provider, version) constraint is the backstop.
    await session.execute(select(User.id).where(User.id == user_id).with_for_update())
    newest = await session.scalar(
        select(func.max(Credential.version)).where(
            Credential.user_id == user_id, Credential.provider == provider
        )
    )
    version = (newest or 0) + 1
    sealed = vault.seal(json.dumps(payload).encode(), aad(user_id, provider, version))
    record = Credential(
        user_id=user_id,
        provider=provider,
        version=version,
        kind=kind,
        key_id=sealed.key_id,
        nonce=sealed.nonce,
        ciphertext=sealed.ciphertext,
        content_version=content_version,
        state=state,
        expires_at=expires_at,
        created_at=utcnow(),
    )
    session.add(record)
    await session.execute(
        sql_delete(Credential).where(
            Credential.user_id == user_id,
            Credential.provider == provider,
            Credential.version < version - KEEP_OLD_VERSIONS,
        )
    )
    await session.flush()
    return record


def open_secret(vault: Vault, record: Credential) -> Secret:
    """Decrypt a record. The result is for an agent only: never log or return it."""
    plain = vault.open(
        Sealed(record.key_id, record.nonce, record.ciphertext),
        aad(record.user_id, record.provider, record.version),
    )
    payload = json.loads(plain)
    kind = record.kind
    if kind is CredentialKind.API_KEY:
        return Secret(kind, api_key=str(payload["apiKey"]))
    files = tuple(
        StoredFile(f["path"], f["content"], f.get("encoding", "utf-8"), f.get("mode", "0600"))
        for f in payload["files"]
    )
    return Secret(kind, files=files)


def open_files(vault: Vault, record: Credential) -> tuple[StoredFile, ...]:
    """The files of an OAuth record (empty for an API key)."""
    return open_secret(vault, record).files


async def delete(session: AsyncSession, user_id: str, provider: str) -> int:
    """Remove every version for (user, provider); returns how many there were."""
    result = await session.execute(
        sql_delete(Credential).where(Credential.user_id == user_id, Credential.provider == provider)
    )
    count: int = getattr(result, "rowcount", 0) or 0
    return count


async def mark_state(
    session: AsyncSession, user_id: str, provider: str, state: CredentialState
) -> Credential | None:
    """Set the current version's state (e.g. ``needs_login`` after a refresh failed).

    The files are kept: a failed refresh says "log in again", it does not wipe.
    """
    record = await current(session, user_id, provider)
    if record is not None:
        record.state = record.state.to(state, subject=f"credential of {user_id} for {provider}")
        await session.flush()
    return record


def effective_state(record: Credential, now: datetime | None = None) -> CredentialState:
    """The state to show: a stored verdict, else "expired" once the expiry passed."""
    stored = record.state
    if stored is not CredentialState.CONNECTED:
        return stored
    expires = record.expires_at
    if expires is not None and expires.tzinfo is None:  # SQLite drops the zone
        expires = expires.replace(tzinfo=(now or utcnow()).tzinfo)
    if expires is not None and expires <= (now or utcnow()):
        return CredentialState.EXPIRED
    return CredentialState.CONNECTED
