"""Controller fixtures: every test runs against SQLite and against PostgreSQL."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from remotecli.controller.settings import Settings
from remotecli.testbed import OAuthServer
from tests.controller import vm_harness
from tests.controller.auth_support import Harness, auth_controller
from tests.controller.harness import RunningController, run_controller
from tests.controller.prompt_support import PromptWorld, prompt_world
from tests.pg import create_database, throwaway_cluster

# Fixtures of the VM tests, shared with the login and prompt tests.
state_dir = vm_harness.state_dir
make_settings = vm_harness.make_settings


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


@pytest.fixture
def harness(make_settings: Callable[..., Settings], oauth_server: OAuthServer) -> Iterator[Harness]:
    """A controller with the VM and login services, the test bed as the provider."""
    with auth_controller(make_settings(), oauth_server) as running:
        yield running


@pytest.fixture
def world(settings: Settings, oauth_server: OAuthServer) -> Iterator[PromptWorld]:
    """A controller with every service, for prompt runs."""
    with prompt_world(settings, oauth_server) as running:
        yield running
