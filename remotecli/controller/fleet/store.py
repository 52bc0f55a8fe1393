"""The ``vms`` table as the VM manager uses it: checked state transitions, sealed tokens.

Every change of a VM's state goes through ``VmStore.update``, which refuses a
transition the life cycle does not have (``states.VM_TRANSITIONS``: a STOPPED
VM never becomes READY again) with ``VmStateError`` (``states.py``, in the tree
drawn in ``remotecli/errors.py``).

Each call is one short transaction: the manager never holds a session open
across an ``await`` on a VM.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from remotecli.controller.db import engine as db
from remotecli.controller.db.models import Vm, utcnow
from remotecli.controller.fleet.states import VmRole, VmState
from remotecli.controller.vault.cipher import Sealed, Vault
from remotecli.errors import VmError

LIVE_STATES = (VmState.STARTING, VmState.READY, VmState.CLAIMED, VmState.STOPPING)
ENDED_STATES = (VmState.STOPPED, VmState.FAILED)


def token_aad(vm_id: str) -> str:
    """Binds a sealed token to its VM: moved to another row, it does not open."""
    return f"vm-token|{vm_id}"


def instance_id_for(vm_id: str) -> str:
    """The backend's instance id: VM ids (``vm_<hex>``) may not contain ``_`` there."""
    return vm_id.replace("_", "-")


class VmStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], vault: Vault) -> None:
        self.sessions = sessions
        self.vault = vault

    async def insert(
        self, *, vm_id: str, backend: str, role: VmRole, origin: str, token: str,
        user_id: str | None,
    ) -> Vm:  # fmt: skip
        sealed = self.vault.seal(token.encode(), token_aad(vm_id))
        row = Vm(
            id=vm_id, backend=backend, role=role, origin=origin, user_id=user_id,
            state=VmState.STARTING, instance_id=instance_id_for(vm_id),
            token_key_id=sealed.key_id, token_nonce=sealed.nonce,
            token_ciphertext=sealed.ciphertext, phases={}, timings={}, health_failures=0,
        )  # fmt: skip
        async with db.session_scope(self.sessions) as session:
            session.add(row)
        return row

    def open_token(self, row: Vm) -> str:
        """The agent token of a VM row (raises ``VaultError`` if it does not open)."""
        sealed = Sealed(row.token_key_id, row.token_nonce, row.token_ciphertext)
        return self.vault.open(sealed, token_aad(row.id)).decode()

    async def update(self, vm_id: str, state: VmState | None = None, **values: Any) -> Vm:
        """Set ``values`` (and ``state``, checked) on one row; returns the row as written.

        ``timings`` is merged into what is there, not replaced.
        """
        async with db.session_scope(self.sessions) as session:
            row = await session.get(Vm, vm_id, with_for_update=True)
            if row is None:
                raise VmError(f"no VM {vm_id} in the database (was it deleted by hand?)")
            if state is not None:
                row.state = row.state.to(state, subject=f"VM {vm_id}")
            if "timings" in values:
                values["timings"] = {**(row.timings or {}), **values["timings"]}
            for key, value in values.items():
                setattr(row, key, value)
        return row

    async def get(self, vm_id: str) -> Vm | None:
        async with self.sessions() as session:
            return await session.get(Vm, vm_id)

    async def live_rows(self) -> list[Vm]:
        async with self.sessions() as session:
            found = await session.execute(select(Vm).where(Vm.state.in_(LIVE_STATES)))
            return list(found.scalars())

    async def list_rows(self, *, include_ended: bool, limit: int) -> list[Vm]:
        query = select(Vm).order_by(Vm.created_at.desc(), Vm.id).limit(limit)
        if not include_ended:
            query = query.where(Vm.state.in_(LIVE_STATES))
        async with self.sessions() as session:
            return list((await session.execute(query)).scalars())

    async def health_passed(self, vm_ids: Iterable[str]) -> None:
        """One statement per monitor round: every VM that answered /health."""
        ids = list(vm_ids)
        if not ids:
            return
        async with db.session_scope(self.sessions) as session:
            await session.execute(
                update(Vm)
                .where(Vm.id.in_(ids))
                .values(last_health_at=utcnow(), health_failures=0, health_error=None)
            )
