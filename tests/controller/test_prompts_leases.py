"""The lease in the database: two controllers racing for a user's credentials, one wins."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from remotecli.controller.db import engine as db
from remotecli.controller.db.models import User, Vm, VmRole, VmState
from remotecli.controller.vault import leases
from remotecli.controller.vault.leases import Claim, CredentialsBusy

pytestmark = pytest.mark.anyio
VMS = ("vm_aaaaaaaaaaaaaaaa", "vm_bbbbbbbbbbbbbbbb")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def controllers(
    database_url: str, anyio_backend: str
) -> AsyncIterator[list[async_sessionmaker[AsyncSession]]]:
    """Two controllers' worth of connections to one database, with a user and two CLI VMs."""
    engines = [db.make_engine(database_url) for _ in range(2)]
    await db.migrate(engines[0])
    sessions = [db.sessionmaker(engine) for engine in engines]
    async with db.session_scope(sessions[0]) as session:
        session.add(User(id="ada"))
        await session.flush()
        for vm_id in VMS:
            session.add(Vm(id=vm_id, backend="fake", role=VmRole.CLI.value,
                           state=VmState.CLAIMED.value, user_id="ada", token_key_id="k1",
                           token_nonce=b"n", token_ciphertext=b"c"))  # fmt: skip
    yield sessions
    for engine in engines:
        await engine.dispose()


async def claim(
    sessions: async_sessionmaker[AsyncSession], vm_id: str, run_id: str, seconds: float = 60.0
) -> Claim:
    return await leases.claim(
        sessions, user_id="ada", provider="codex", vm_id=vm_id, run_id=run_id,
        credential_version=1, run_seconds=seconds,
    )  # fmt: skip


async def test_of_two_controllers_claiming_at_once_exactly_one_wins(
    controllers: list[async_sessionmaker[AsyncSession]],
) -> None:
    for round_ in range(8):
        racers = zip(controllers, VMS, strict=True)
        results = await asyncio.gather(
            *(claim(s, vm, f"run_{round_}_{i}") for i, (s, vm) in enumerate(racers)),
            return_exceptions=True,
        )
        winners = [r for r in results if isinstance(r, Claim)]
        losers = [r for r in results if isinstance(r, CredentialsBusy)]
        assert (len(winners), len(losers)) == (1, 1), results
        async with controllers[0]() as session:
            lease = await leases.get(session, "ada", "codex", lock=False)
        assert lease is not None and lease.run_id == winners[0].run_id
        if winners[0].previous_vm_id is not None:  # it moves to the winner's VM
            async with db.session_scope(controllers[0]) as session:
                await leases.move(session, winners[0])
        await leases.release(controllers[0], winners[0])
        async with controllers[1]() as session:
            lease = await leases.get(session, "ada", "codex", lock=False)
        assert lease is not None and (lease.vm_id, lease.run_id) == (winners[0].vm_id, None)


async def test_a_claim_says_where_the_live_copy_is(
    controllers: list[async_sessionmaker[AsyncSession]],
) -> None:
    first = await claim(controllers[0], VMS[0], "run_1")
    assert (first.previous_vm_id, first.content_version) == (None, None)
    async with db.session_scope(controllers[0]) as session:
        await leases.record_copy(session, user_id="ada", provider="codex", vm_id=VMS[0],
                                 credential_version=1, content_version="v1")  # fmt: skip
    await leases.release(controllers[0], first)
    again = await claim(controllers[1], VMS[0], "run_2")
    assert (again.previous_vm_id, again.content_version) == (None, "v1")
    await leases.release(controllers[1], again)
    moving = await claim(controllers[1], VMS[1], "run_3")
    assert (moving.previous_vm_id, moving.content_version) == (VMS[0], None)


async def test_a_claim_left_by_a_dead_controller_lapses(
    controllers: list[async_sessionmaker[AsyncSession]],
) -> None:
    # A claim whose deadline has passed: its controller died mid-run.
    await claim(controllers[0], VMS[0], "run_dead", seconds=-leases.BUSY_GRACE_SECONDS - 1)
    taken = await claim(controllers[1], VMS[1], "run_next")
    assert taken.previous_vm_id == VMS[0]
    with pytest.raises(CredentialsBusy) as refused:
        await claim(controllers[0], VMS[0], "run_third")
    assert refused.value.details["run_id"] == "run_next"
    async with controllers[0]() as session:
        assert await leases.busy_run(session, "ada", "codex") == "run_next"
