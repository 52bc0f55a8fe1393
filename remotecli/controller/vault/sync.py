"""Credentials between the vault and a CLI VM: write the live copy in, sync a changed one back.

The vault holds a chain of versions per (user, provider); the lease row
(``leases.py``) says which VM holds the live copy and which vault version it
descends from (``credential_version``) with what content (``content_version``,
the agent's sha256 over the files). Two rules keep a rotated refresh token
from being lost or replayed:

- Before a run, the VM must hold the vault's newest version. If it holds
  changes we never synced (a sync-back failed after a refresh), those are
  the live tokens: they are stored first and kept, never overwritten.
- After a run (and before a VM goes away), changed files become a NEW vault
  version, unless the user logged in again meanwhile: then the VM's copy
  belongs to a chain the vault no longer follows, and the login wins.

Nothing here logs file contents or tokens; only providers, versions and ids.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from remotecli.agent import wire
from remotecli.agent.codec import to_json
from remotecli.controller.db.engine import session_scope
from remotecli.controller.db.models import Credential
from remotecli.controller.vault import credentials, leases
from remotecli.controller.vault.cipher import Vault
from remotecli.controller.vault.leases import Claim
from remotecli.vmm.agentclient import AgentClient

log = logging.getLogger("remotecli.controller.vault.sync")


class VaultAccess(Protocol):
    """What a sync needs of the controller: its sessions and its vault (``AppContext`` has both)."""

    sessions: async_sessionmaker[AsyncSession]
    vault: Vault


@dataclass(frozen=True)
class SyncOutcome:
    """What a sync-back did. ``stored``: the vault version it added (None: none)."""

    changed: bool
    stored: int | None = None
    #: Why a changed copy was not stored (``relogged``: a newer login won).
    skipped: str | None = None


async def read_copy(agent: AgentClient, provider: str) -> wire.Credentials:
    """The agent's ``GET /credentials`` answer (files, content version)."""
    return await agent.read_credentials(provider)


async def prepare(
    context: VaultAccess, agent: AgentClient, claim: Claim, record: Credential
) -> str:
    """Make the claimed VM hold the live copy; return what it holds: "kept", "synced", "written".

    One ``GET /credentials`` decides: the VM already holds the vault's version
    (nothing to write), or it holds unsynced changes of the version it was
    given (store them: they are the live tokens), or anything else (write
    the vault's version in, which also merges the seed files a second machine
    needs: Claude's onboarding flag, Gemini's settings).
    """
    held = await read_copy(agent, claim.provider)
    vm_version = held.version
    if vm_version is not None and vm_version == record.content_version:
        async with session_scope(context.sessions) as session:
            await leases.record_copy(
                session, user_id=claim.user_id, provider=claim.provider, vm_id=claim.vm_id,
                credential_version=record.version, content_version=vm_version,
            )  # fmt: skip
        return "kept"
    unsynced = (
        vm_version is not None
        and claim.content_version is not None
        and claim.credential_version == record.version
        and vm_version != claim.content_version
    )
    if unsynced:
        log.warning(
            "the VM holds credential changes that were never synced back; storing them",
            extra={"user_id": claim.user_id, "provider": claim.provider, "vm_id": claim.vm_id},
        )
        outcome = await _store(context, claim.user_id, claim.provider, claim.vm_id, held)
        if outcome.stored is not None:
            return "synced"
    files = credentials.open_files(context.vault, record)
    written = await agent.write_credentials(claim.provider, [f.to_agent() for f in files])
    async with session_scope(context.sessions) as session:
        await leases.record_copy(
            session, user_id=claim.user_id, provider=claim.provider, vm_id=claim.vm_id,
            credential_version=record.version, content_version=written.version,
        )  # fmt: skip
    return "written"


async def sync_back(
    context: VaultAccess, agent: AgentClient, user_id: str, provider: str, vm_id: str
) -> SyncOutcome:
    """Store the VM's copy as a new vault version if it changed since we wrote or synced it."""
    return await _store(context, user_id, provider, vm_id, await read_copy(agent, provider))


async def _store(
    context: VaultAccess, user_id: str, provider: str, vm_id: str, held: wire.Credentials
) -> SyncOutcome:
    version = held.version
    async with session_scope(context.sessions) as session:
        # Locked on PostgreSQL: the run's own sync-back and a before-destroy
        # hook may race; the second then sees the first's content version.
        lease = await leases.get(session, user_id, provider, lock=True)
        if lease is None or lease.vm_id != vm_id:
            return SyncOutcome(changed=False, skipped="not_holder")
        if version is None or version == lease.content_version:
            return SyncOutcome(changed=False)
        latest = await credentials.current(session, user_id, provider)
        if latest is None or latest.version != lease.credential_version:
            log.warning(
                "not syncing back a copy the vault no longer follows (new login or disconnect)",
                extra={"user_id": user_id, "provider": provider, "vm_id": vm_id},
            )
            return SyncOutcome(changed=True, skipped="relogged")
        if not held.complete:
            log.warning(
                "not syncing back an incomplete set of credential files",
                extra={"user_id": user_id, "provider": provider, "vm_id": vm_id,
                       "missing": held.missing},
            )  # fmt: skip
            return SyncOutcome(changed=True, skipped="incomplete")
        record = await credentials.store_files(
            session, context.vault, user_id, provider, to_json(held)
        )
        await leases.record_copy(
            session, user_id=user_id, provider=provider, vm_id=vm_id,
            credential_version=record.version, content_version=version,
        )  # fmt: skip
        log.info(
            "synced rotated credentials back to the vault",
            extra={"user_id": user_id, "provider": provider, "vm_id": vm_id,
                   "version": record.version},
        )  # fmt: skip
        return SyncOutcome(changed=True, stored=record.version)
