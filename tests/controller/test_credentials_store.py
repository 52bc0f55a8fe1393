"""The vault's records: versions per (user, provider), sealed and bound to their row.

Against the real database (SQLite and PostgreSQL), migrated by Alembic.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from remotecli.agent.codec import to_json
from remotecli.controller.db import engine as db
from remotecli.controller.db.models import Credential, CredentialState, User, utcnow
from remotecli.controller.vault import credentials
from remotecli.controller.vault.cipher import Vault, VaultError
from remotecli.controller.vault.credentials import CaptureError, StoredFile
from remotecli.controller.vault.states import CredentialKind

pytestmark = pytest.mark.anyio

CLAUDE = ".claude/.credentials.json"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def factory(
    database_url: str, anyio_backend: str
) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = db.make_engine(database_url)
    await db.migrate(engine)
    sessions = db.sessionmaker(engine)
    async with db.session_scope(sessions) as session:
        session.add_all([User(id="alice"), User(id="bob")])
    yield sessions
    await engine.dispose()


@pytest.fixture
def vault() -> Vault:
    return Vault([("k1", os.urandom(32))])


def captured(
    token: str, *, expires_ms: int | None = None, version: str | None = None
) -> dict[str, Any]:
    oauth: dict[str, Any] = {"accessToken": token, "refreshToken": f"r-{token}"}
    if expires_ms is not None:
        oauth["expiresAt"] = expires_ms
    content = json.dumps({"claudeAiOauth": oauth})
    return {
        "provider": "claude_code",
        "complete": True,
        "missing": [],
        "version": version or f"v-{token}",
        "files": [
            {"path": CLAUDE, "mode": "0600", "sha256": "x", "content": content, "encoding": "utf-8"}
        ],
    }


async def store(
    factory: async_sessionmaker[AsyncSession],
    vault: Vault,
    body: dict[str, Any],
    user: str = "alice",
) -> Credential:
    async with db.session_scope(factory) as session:
        return await credentials.store_files(session, vault, user, "claude_code", body)


async def test_captured_files_are_sealed_and_open_to_what_was_captured(
    factory: async_sessionmaker[AsyncSession], vault: Vault
) -> None:
    expires = utcnow() + timedelta(hours=1)
    record = await store(
        factory, vault, captured("tok-1", expires_ms=int(expires.timestamp() * 1000))
    )

    files = credentials.open_files(vault, record)
    assert [
        (f.path, f.mode, json.loads(f.data())["claudeAiOauth"]["accessToken"]) for f in files
    ] == [(CLAUDE, "0600", "tok-1")]
    assert (record.version, record.kind, record.state, record.content_version) == (
        1,
        "oauth",
        "connected",
        "v-tok-1",
    )
    assert record.expires_at is not None
    assert abs((record.expires_at - expires).total_seconds()) < 0.01
    assert b"tok-1" not in record.ciphertext and record.key_id == "k1"
    assert to_json(files[0].to_agent()) == {
        "path": CLAUDE, "content": files[0].content, "encoding": "utf-8",
    }  # fmt: skip
    assert "tok-1" not in repr(files) and "tok-1" not in repr(
        credentials.open_secret(vault, record)
    )


async def test_every_capture_is_a_new_version_and_old_ones_are_pruned(
    factory: async_sessionmaker[AsyncSession], vault: Vault
) -> None:
    for n in range(1, credentials.KEEP_OLD_VERSIONS + 4):
        await store(factory, vault, captured(f"tok-{n}"))
    newest = credentials.KEEP_OLD_VERSIONS + 3

    async with factory() as session:
        versions = (
            (
                await session.execute(
                    select(Credential.version)
                    .where(Credential.user_id == "alice")
                    .order_by(Credential.version)
                )
            )
            .scalars()
            .all()
        )
        current = await credentials.current(session, "alice", "claude_code")
    assert list(versions) == list(range(newest - credentials.KEEP_OLD_VERSIONS, newest + 1))
    assert current is not None and current.version == newest
    assert (
        json.loads(credentials.open_files(vault, current)[0].data())["claudeAiOauth"]["accessToken"]
        == f"tok-{newest}"
    )


async def test_unchanged_files_add_no_version(
    factory: async_sessionmaker[AsyncSession], vault: Vault
) -> None:
    first = await store(factory, vault, captured("tok-1"))
    again = await store(factory, vault, captured("tok-1"))

    assert (first.id, again.version) == (again.id, 1)


async def test_a_record_moved_to_another_row_does_not_open(
    factory: async_sessionmaker[AsyncSession], vault: Vault
) -> None:
    alice = await store(factory, vault, captured("tok-a"))
    bob = await store(factory, vault, captured("tok-b"), user="bob")
    bob.key_id, bob.nonce, bob.ciphertext = alice.key_id, alice.nonce, alice.ciphertext

    with pytest.raises(VaultError, match="failed authentication"):
        credentials.open_files(vault, bob)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"complete": False, "missing": [CLAUDE]}, "missing: .claude/.credentials.json"),
        ({"provider": "codex"}, "not 'claude_code'"),
        ({"files": []}, "no credential files"),
        ({"files": [{"path": CLAUDE}]}, "malformed"),
        ({"files": [{"path": CLAUDE, "content": "!!", "encoding": "base64"}]}, "not valid base64"),
        ({"files": [{"path": CLAUDE, "content": "x", "encoding": "rot13"}]}, "unknown"),
    ],
)
async def test_incomplete_or_malformed_captures_are_refused_and_nothing_is_stored(
    factory: async_sessionmaker[AsyncSession], vault: Vault, change: dict[str, Any], message: str
) -> None:
    with pytest.raises(CaptureError, match=message):
        await store(factory, vault, {**captured("tok"), **change})

    async with factory() as session:
        assert await credentials.current(session, "alice", "claude_code") is None


async def test_binary_files_round_trip_as_base64(
    factory: async_sessionmaker[AsyncSession], vault: Vault
) -> None:
    data = bytes(range(256))
    body = {
        **captured("tok"),
        "files": [
            {
                "path": CLAUDE,
                "mode": "0600",
                "encoding": "base64",
                "content": base64.b64encode(data).decode(),
            }
        ],
    }
    record = await store(factory, vault, body)

    assert credentials.open_files(vault, record)[0].data() == data
    assert record.state == CredentialState.NEEDS_LOGIN  # no token the CLI could use


async def test_api_keys_are_sealed_versions_of_their_own_kind(
    factory: async_sessionmaker[AsyncSession], vault: Vault
) -> None:
    async with db.session_scope(factory) as session:
        record = await credentials.store_api_key(session, vault, "alice", "gemini_cli", " key-1 ")

    secret = credentials.open_secret(vault, record)
    assert (secret.kind, secret.api_key, secret.files) == (CredentialKind.API_KEY, "key-1", ())
    assert "key-1" not in repr(secret)
    assert (record.kind, record.expires_at, record.content_version) == ("api_key", None, None)


@pytest.mark.parametrize("key", ["", "   ", "two words", "x" * 5000, None])
def test_unusable_api_keys_are_refused(key: str | None) -> None:
    with pytest.raises(ValueError, match="apiKey"):
        credentials.check_api_key(key)


async def test_list_mark_state_and_delete(
    factory: async_sessionmaker[AsyncSession], vault: Vault
) -> None:
    await store(factory, vault, captured("tok-1"))
    await store(factory, vault, captured("tok-2"))
    async with db.session_scope(factory) as session:
        await credentials.store_api_key(session, vault, "alice", "codex", "sk-1")
        await credentials.store_api_key(session, vault, "bob", "codex", "sk-2")

    async with db.session_scope(factory) as session:
        listed = await credentials.list_for_user(session, "alice")
        assert [(c.provider, c.version) for c in listed] == [("claude_code", 2), ("codex", 1)]
        marked = await credentials.mark_state(
            session, "alice", "claude_code", CredentialState.NEEDS_LOGIN
        )
        assert marked is not None and marked.version == 2
        assert (
            await credentials.mark_state(session, "alice", "gemini_cli", CredentialState.EXPIRED)
            is None
        )
    async with db.session_scope(factory) as session:
        current = await credentials.current(session, "alice", "claude_code")
        assert current is not None and current.state == CredentialState.NEEDS_LOGIN
        assert credentials.open_files(vault, current)  # marked, not wiped
        assert await credentials.delete(session, "alice", "claude_code") == 2
        assert await credentials.delete(session, "alice", "claude_code") == 0
    async with factory() as session:
        assert [c.provider for c in await credentials.list_for_user(session, "alice")] == ["codex"]
        assert [c.provider for c in await credentials.list_for_user(session, "bob")] == ["codex"]


def test_effective_state_turns_expired_when_the_expiry_passes() -> None:
    now = utcnow()
    record = Credential(state="connected", expires_at=now - timedelta(seconds=1))
    naive = Credential(
        state="connected", expires_at=(now + timedelta(hours=1)).replace(tzinfo=None)
    )

    assert credentials.effective_state(record, now) is CredentialState.EXPIRED
    assert credentials.effective_state(naive, now) is CredentialState.CONNECTED
    assert credentials.effective_state(Credential(state="needs_login"), now) is (
        CredentialState.NEEDS_LOGIN
    )


def test_stored_files_hide_their_content() -> None:
    assert "secret" not in repr(StoredFile(CLAUDE, "secret"))
