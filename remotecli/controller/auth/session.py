"""One login's state: the row in the database (the truth) and what this process holds for it.

``SessionRows`` writes ``auth_sessions`` rows with checked phase transitions
and wakes whoever follows a session (the SSE streams) after every change.
``Live`` is what only the running controller has: the claimed VM, the
agent's session id, the task that drives the login, and the events the
start request and the code relay wait on. It owns its lock: the driver and
the code relay ask it (``writing``, ``finish``) instead of taking it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from remotecli.controller.auth.states import AuthPhase
from remotecli.controller.db.engine import session_scope
from remotecli.controller.db.models import AuthSession, utcnow
from remotecli.controller.fleet.manager import VmHandle


@dataclass(eq=False)
class Live:
    id: str
    user_id: str
    provider: str
    mode: str
    #: time.monotonic() when the start request arrived ("the click").
    t0: float
    #: time.monotonic() by which the login must have ended.
    deadline: float
    vm: VmHandle | None = None
    agent_session: str | None = None
    task: asyncio.Task[None] | None = None
    #: The agent said authenticated: the files are being stored; too late to cancel.
    capturing: bool = False
    #: A pasted answer is being relayed; a second one must wait for its verdict.
    answering: bool = False
    #: The start request may answer: the URL is known, or the session ended.
    started: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    #: Someone is ending the session; no other write may change it any more.
    _finished: bool = field(default=False, init=False)
    #: Held by every write of the row while it is in progress, and by ``finish``.
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False)

    @property
    def finished(self) -> bool:
        return self._finished

    @contextlib.asynccontextmanager
    async def writing(self) -> AsyncIterator[bool]:
        """Hold the session while its row is written; yields False once it is ending (then
        write nothing: the end is recorded by whoever called ``finish``)."""
        async with self._lock:
            yield not self._finished

    async def finish(self) -> bool:
        """Mark the session ending; True for the first caller only, who then ends it.
        Waits for a write in progress (``writing``) to be done."""
        async with self._lock:
            if self._finished:
                return False
            self._finished = True
            return True

    def ms(self) -> float:
        """Milliseconds since the click."""
        return round((time.monotonic() - self.t0) * 1000, 1)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()


class SessionRows:
    def __init__(self, factory: async_sessionmaker[AsyncSession]) -> None:
        self._factory = factory
        # Followers hold their event; once none does, it disappears by itself.
        self._changed: weakref.WeakValueDictionary[str, asyncio.Event] = (
            weakref.WeakValueDictionary()
        )

    async def load(self, session_id: str) -> AuthSession | None:
        async with self._factory() as session:
            return await session.get(AuthSession, session_id)

    async def add(self, row: AuthSession) -> None:
        async with session_scope(self._factory) as session:
            session.add(row)
        self.notify(row.id)

    async def write(
        self,
        session_id: str,
        *,
        phase: AuthPhase | None = None,
        timings: dict[str, Any] | None = None,
        **fields: Any,
    ) -> AuthSession:
        """Change one row (phase checked against ``AUTH_TRANSITIONS``) and wake its followers."""
        async with session_scope(self._factory) as session:
            row = await session.get(AuthSession, session_id, with_for_update=True)
            if row is None:
                raise LookupError(f"auth session {session_id} vanished")
            if phase is not None:
                row.phase = row.phase.to(phase)
            for name, value in fields.items():
                setattr(row, name, value)
            if timings:
                # A new dict: SQLAlchemy does not see in-place changes of JSON values.
                row.timings = {**(row.timings or {}), **timings}
            row.updated_at = utcnow()
        self.notify(session_id)
        return row

    async def update(
        self,
        live: Live,
        *,
        phase: AuthPhase | None = None,
        timings: dict[str, Any] | None = None,
        **fields: Any,
    ) -> bool:
        """Like ``write`` for a session still in progress; False (nothing written) once it ends."""
        async with live.writing() as in_progress:
            if not in_progress:
                return False
            await self.write(live.id, phase=phase, timings=timings, **fields)
            return True

    def changed(self, session_id: str) -> asyncio.Event:
        """An event set at the next change of the session (take it BEFORE reading the row)."""
        event = self._changed.get(session_id)
        if event is None:
            event = asyncio.Event()
            self._changed[session_id] = event
        return event

    def notify(self, session_id: str) -> None:
        event = self._changed.pop(session_id, None)
        if event is not None:
            event.set()
