"""The security tests reuse the controller fixtures: SQLite and PostgreSQL for every controller."""

from __future__ import annotations

from tests.controller.conftest import (
    controller,
    database_url,
    pg_cluster,
    settings,
    short_state_dir,
    world,
)

__all__ = ["controller", "database_url", "pg_cluster", "settings", "short_state_dir", "world"]
