"""What the running controller holds: made in the app's lifespan, reached through ``deps``.

Nothing here is created at import time: tests build as many apps as they
like, each with its own database and backend.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from remotecli.controller.settings import Settings
from remotecli.controller.vault import Vault


@dataclass
class AppContext:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    vault: Vault
    #: Services started in the lifespan (VM manager, auth flows, runs), by name.
    services: dict[str, Any] = field(default_factory=dict)


#: A lifespan hook: starts or stops one service of the controller.
Startup = Callable[[AppContext], Awaitable[None]]
Shutdown = Callable[[AppContext], Awaitable[None]]
