"""Controller fixtures: every test runs against SQLite and against PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from remotecli.controller.settings import Settings
from tests.controller.harness import RunningController, run_controller
from tests.pg import create_database, throwaway_cluster


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[str]:
    with throwaway_cluster() as base_url:
        yield base_url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'remotecli.db'}"
    base: str = request.getfixturevalue("pg_cluster")
    return create_database(base)


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        environment="test",
        state_dir=tmp_path / "state",
        database_url=database_url,
        backend="fake",
        warm_pool_auth=0,
    )


@pytest.fixture
def controller(settings: Settings) -> Iterator[RunningController]:
    with run_controller(settings) as running:
        yield running
