"""Controller fixtures: every test runs against SQLite and against PostgreSQL."""

from __future__ import annotations

import shutil
import tempfile
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
def short_state_dir() -> Iterator[Path]:
    """VM state lives here: agent socket paths under it must fit 108 bytes (not tmp_path)."""
    path = Path(tempfile.mkdtemp(prefix="rcli-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def settings(short_state_dir: Path, database_url: str) -> Settings:
    return Settings(
        environment="test",
        state_dir=short_state_dir,
        database_url=database_url,
        backend="fake",
        warm_pool_auth=0,
    )


@pytest.fixture
def controller(settings: Settings) -> Iterator[RunningController]:
    with run_controller(settings) as running:
        yield running
