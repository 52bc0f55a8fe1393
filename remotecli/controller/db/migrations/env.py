"""Alembic environment: migrations run on the connection the app hands over (see db.migrate)."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from remotecli.controller.db.models import Base

connection: Connection | None = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through remotecli.controller.db.engine.migrate()")
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER most things
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
