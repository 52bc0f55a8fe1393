"""Migrations: one head; up, down to nothing and up again on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from remotecli.controller.db import engine as db
from remotecli.controller.db.models import Base


def test_the_history_has_one_head() -> None:
    assert ScriptDirectory.from_config(db.alembic_config()).get_heads() == ["0003"]


def test_upgrade_downgrade_upgrade_matches_the_models(database_url: str) -> None:
    async def scenario() -> tuple[set[str], set[str]]:
        engine = db.make_engine(database_url)
        try:
            await db.migrate(engine)

            def down(connection: Connection) -> None:
                config = db.alembic_config()
                config.attributes["connection"] = connection
                command.downgrade(config, "base")

            async with engine.begin() as connection:
                await connection.run_sync(down)
                after_down = set(await connection.run_sync(lambda c: inspect(c).get_table_names()))
            await db.migrate(engine)
            async with engine.connect() as connection:
                tables = set(await connection.run_sync(lambda c: inspect(c).get_table_names()))
            return after_down, tables
        finally:
            await engine.dispose()

    after_down, tables = asyncio.run(scenario())
    assert after_down <= {"alembic_version"}
    assert tables - {"alembic_version"} == set(Base.metadata.tables)
