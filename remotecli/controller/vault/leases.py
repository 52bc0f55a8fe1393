"""Credential leases: at most one VM holds a live copy of a user's provider credentials.

Claude and Codex refresh tokens are single-use: two VMs refreshing the same
chain log each other out (the provider sees a reuse and revokes the chain).
So the ``leases`` row for (user, provider) names the one VM whose copy is
live, and ``run_id``/``busy_until`` say a prompt run is using it right now.

The rules, enforced by the database so that several controllers agree:

- A run *claims* the lease before it writes or uses the files. No row: it
  INSERTs one (the primary key lets exactly one of two racing inserts win).
  A row that is not busy: a compare-and-set UPDATE (``WHERE busy_until is
  lapsed AND vm_id = <what we read>``) marks it busy; of two racing updates
  one matches no row and retries. A busy row: ``CredentialsBusy`` (a
  ``Conflict``, 409; the tree is drawn in ``controller/errors.py``) — we
  refuse rather than queue, so a caller never waits minutes behind another
  run and never holds a socket open for nothing.
- When the lease moves to another VM, the claimer syncs the old VM's copy
  back first (``prompts.py``), then ``move()`` points the row at its VM.
- ``release()`` clears the busy mark; the VM keeps the lease (its copy is
  still the live one) until another VM takes it or the VM goes away
  (``drop()`` from the VM manager's before-destroy hook).
- ``busy_until`` is the run's deadline plus a grace, so the claim of a
  controller that died mid-run lapses on its own.

Datetimes are compared in SQL (SQLite hands them back without a timezone).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from remotecli.controller.db.engine import session_scope
from remotecli.controller.db.models import Lease, utcnow
from remotecli.controller.errors import Conflict

#: Added to a run's own deadline: the time to cancel, drain and sync back.
BUSY_GRACE_SECONDS = 120.0
#: Compare-and-set attempts before giving up; each retry means another
#: claimer changed the row between our read and our write.
CLAIM_ATTEMPTS = 5


class CredentialsBusy(Conflict):
    code = "credentials_busy"


@dataclass(frozen=True)
class Claim:
    """A claimed lease: the run may use the credentials in ``vm_id``."""

    user_id: str
    provider: str
    vm_id: str
    run_id: str
    #: Another VM held the live copy: sync it back from there before moving.
    previous_vm_id: str | None
    #: What the lease says ``vm_id`` holds (None: nothing we know of).
    content_version: str | None
    #: The vault version that copy descends from.
    credential_version: int | None


def _lapsed(now: datetime) -> ColumnElement[bool]:
    return or_(Lease.busy_until.is_(None), Lease.busy_until <= now)


def _busy_error(provider: str, run_id: str | None) -> CredentialsBusy:
    return CredentialsBusy(
        f"another prompt ({run_id or 'unknown run'}) is using this user's {provider} "
        "credentials; wait for it to finish and try again",
        run_id=run_id,
    )


async def claim(
    sessions: async_sessionmaker[AsyncSession],
    *,
    user_id: str,
    provider: str,
    vm_id: str,
    run_id: str,
    credential_version: int,
    run_seconds: float,
) -> Claim:
    """Take the lease for ``run_id`` on ``vm_id``, or raise ``CredentialsBusy``."""
    for _ in range(CLAIM_ATTEMPTS):
        now = utcnow()
        busy_until = now + timedelta(seconds=run_seconds + BUSY_GRACE_SECONDS)
        async with session_scope(sessions) as session:
            row = (
                await session.execute(
                    select(Lease.vm_id, Lease.content_version, Lease.credential_version)
                    .where(Lease.user_id == user_id, Lease.provider == provider)
                )
            ).one_or_none()  # fmt: skip
            if row is None:
                session.add(
                    Lease(user_id=user_id, provider=provider, vm_id=vm_id, run_id=run_id,
                          busy_until=busy_until, credential_version=credential_version,
                          content_version=None, acquired_at=now)
                )  # fmt: skip
                try:
                    await session.flush()
                except IntegrityError:
                    await session.rollback()
                    if await _exists(sessions, user_id, provider):
                        continue  # another claimer inserted first: look again
                    raise
                return Claim(user_id, provider, vm_id, run_id, None, None, None)
            held_vm, content_version, held_version = row
            taken = await session.execute(
                update(Lease)
                .where(Lease.user_id == user_id, Lease.provider == provider,
                       Lease.vm_id == held_vm, _lapsed(now))
                .values(run_id=run_id, busy_until=busy_until)
            )  # fmt: skip
            if taken.rowcount == 1:  # type: ignore[attr-defined]
                if held_vm == vm_id:
                    return Claim(
                        user_id, provider, vm_id, run_id, None, content_version, held_version
                    )
                return Claim(user_id, provider, vm_id, run_id, held_vm, None, held_version)
        # Matched nothing: busy, or changed since we read it. Say which.
        holder = await _holder(sessions, user_id, provider, now)
        if holder is not None:
            raise _busy_error(provider, holder)
    raise _busy_error(provider, None)


async def _exists(sessions: async_sessionmaker[AsyncSession], user_id: str, provider: str) -> bool:
    async with sessions() as session:
        found = await session.execute(
            select(Lease.vm_id).where(Lease.user_id == user_id, Lease.provider == provider)
        )
        return found.first() is not None


async def _holder(
    sessions: async_sessionmaker[AsyncSession], user_id: str, provider: str, now: datetime
) -> str | None:
    """The run id of a busy lease (an empty string for a busy row without one)."""
    async with sessions() as session:
        found = await session.execute(
            select(Lease.run_id).where(
                Lease.user_id == user_id,
                Lease.provider == provider,
                Lease.busy_until.is_not(None),
                Lease.busy_until > now,
            )
        )
        row = found.first()
        return None if row is None else (row[0] or "")


async def busy_run(session: AsyncSession, user_id: str, provider: str) -> str | None:
    """The run using the lease now, if any (a cheap check before starting a VM)."""
    found = await session.execute(
        select(Lease.run_id).where(
            Lease.user_id == user_id,
            Lease.provider == provider,
            Lease.busy_until.is_not(None),
            Lease.busy_until > utcnow(),
        )
    )
    row = found.first()
    return None if row is None else (row[0] or "")


async def move(session: AsyncSession, claim: Claim) -> None:
    """Point the claimed lease at the claimer's VM (after syncing the old copy back)."""
    await session.execute(
        update(Lease)
        .where(Lease.user_id == claim.user_id, Lease.provider == claim.provider,
               Lease.run_id == claim.run_id)
        .values(vm_id=claim.vm_id, content_version=None, acquired_at=utcnow())
    )  # fmt: skip


async def get(session: AsyncSession, user_id: str, provider: str, *, lock: bool) -> Lease | None:
    """The lease row; ``lock`` takes a row lock on PostgreSQL (SQLite serializes writers)."""
    query = select(Lease).where(Lease.user_id == user_id, Lease.provider == provider)
    if lock:
        query = query.with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def record_copy(
    session: AsyncSession,
    *,
    user_id: str,
    provider: str,
    vm_id: str,
    credential_version: int,
    content_version: str | None,
) -> None:
    """The VM now holds ``content_version`` (vault ``credential_version``) as the live copy."""
    await session.execute(
        update(Lease)
        .where(Lease.user_id == user_id, Lease.provider == provider, Lease.vm_id == vm_id)
        .values(credential_version=credential_version, content_version=content_version)
    )  # fmt: skip


async def release(sessions: async_sessionmaker[AsyncSession], claim: Claim) -> None:
    """The run is over: the VM keeps the copy, others may claim it again."""
    async with session_scope(sessions) as session:
        await session.execute(
            update(Lease)
            .where(Lease.user_id == claim.user_id, Lease.provider == claim.provider,
                   Lease.run_id == claim.run_id)
            .values(run_id=None, busy_until=None)
        )  # fmt: skip


async def held_by(session: AsyncSession, vm_id: str) -> list[Lease]:
    """Every lease whose live copy is in ``vm_id``."""
    found = await session.execute(select(Lease).where(Lease.vm_id == vm_id))
    return list(found.scalars())


async def drop(session: AsyncSession, lease: Lease) -> None:
    """Forget a VM's copy (the VM is going away); only if it still holds the lease."""
    await session.execute(
        delete(Lease).where(
            Lease.user_id == lease.user_id,
            Lease.provider == lease.provider,
            Lease.vm_id == lease.vm_id,
        )
    )
