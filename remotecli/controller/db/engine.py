"""The database: an async engine made in the app's lifespan, sessions, and migrations.

SQLite (``sqlite+aiosqlite``) by default, PostgreSQL (``postgresql+psycopg``)
in production and CI. ``migrate()`` brings the schema to head with Alembic at
start-up, inside one transaction; the app never calls ``create_all``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import event, make_url, text
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from remotecli.controller.errors import StorageFull, Unavailable, database_error

MIGRATIONS = Path(__file__).parent / "migrations"
#: Backoff bounds (seconds) of ``retry_unavailable``.
RETRY_SECONDS = (0.5, 5.0)

log = logging.getLogger(__name__)
T = TypeVar("T")


def make_engine(url: str) -> AsyncEngine:
    if url.startswith("sqlite"):
        # One writer at a time is SQLite's model; wait for the lock instead of
        # failing at once, and enforce foreign keys (off by default in SQLite).
        engine = create_async_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.close()

        return engine
    return create_async_engine(url, pool_pre_ping=True)


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def where(url: str | URL) -> str:
    """The database's URL for people: driver, host and name, never the password."""
    return make_url(url).render_as_string(hide_password=True)


async def wait_available(engine: AsyncEngine, seconds: float) -> None:
    """Return once the database answers; retry with backoff while it is away, busy or full.

    At start-up the database may still be starting (a PostgreSQL service next to
    ours). After ``seconds`` a ``database_unavailable`` error names the database
    (without its password), the last cause and what to do.
    """
    deadline = time.monotonic() + seconds

    async def ping() -> None:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    try:
        await retry_unavailable(
            ping, "reach the database at start", give_up=lambda: time.monotonic() > deadline
        )
    except SQLAlchemyError as exc:
        error = database_error(exc)
        if error is None:
            raise
        cause = "its disk is full" if isinstance(error, StorageFull) else "down or unreachable"
        raise Unavailable(
            f"the controller's database {where(engine.url)} did not answer within "
            f"{seconds:.0f} s ({cause}). Start it (or free its disk), or fix "
            "REMOTECLI_DATABASE_URL, then start the controller again",
            code="database_unavailable",
        ) from None


async def check_available(url: str, seconds: float) -> None:
    """``wait_available`` on a short-lived engine of its own (the CLI's check before start)."""
    engine = make_engine(url)
    try:
        await wait_available(engine, seconds)
    finally:
        await engine.dispose()


async def migrate(engine: AsyncEngine) -> None:
    """Upgrade the schema to the newest migration."""

    def upgrade(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "head")

    async with engine.begin() as connection:
        await connection.run_sync(upgrade)


@asynccontextmanager
async def session_scope(
    factory: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """A session that commits on success and rolls back on any error."""
    async with factory() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


async def retry_unavailable(
    write: Callable[[], Awaitable[T]],
    what: str,
    *,
    give_up: Callable[[], bool] = lambda: False,
    extra: dict[str, Any] | None = None,
) -> T:
    """Run ``write``, again with backoff while the database is away, busy or full.

    For what must get through: the writes that end something (a login's row,
    a run's lease; left undone they leave it open for good) and the start-up
    check (``wait_available``, which gives up at its deadline). Other errors, and any error once
    ``give_up()`` is true, are raised; a cancel stops the retries.
    """
    delay, most = RETRY_SECONDS
    while True:
        try:
            return await write()
        except SQLAlchemyError as exc:
            error = database_error(exc)
            if error is None or give_up():
                raise
            log.warning("could not %s (%s); retrying in %.1f s", what, error.code, delay,
                        extra=extra)  # fmt: skip
        await asyncio.sleep(delay)
        delay = min(delay * 2, most)
