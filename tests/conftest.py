"""Fixtures shared by the suites: the test bed's OAuth server, the real agent, and the
controller's ladder (``tests/support/controller.py``) on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from remotecli.controller.settings import Settings
from remotecli.testbed import TESTBED_URL_ENV, OAuthServer, fake_cli_bin_dir
from tests.support.agent_harness import RunningAgent, run_agent
from tests.support.controller import (
    Controller,
    auth_controller,
    prompt_world,
    reap_all,
    run_controller,
)
from tests.support.pg import create_database, throwaway_cluster


@pytest.fixture(scope="session")
def oauth_server() -> Iterator[OAuthServer]:
    # A short device-code polling interval: the default 5 s would make every
    # Codex device login in the tests take 5 s.
    with OAuthServer(device_interval=0.05) as server:
        yield server


@pytest.fixture
def agent(tmp_path: Path, oauth_server: OAuthServer) -> Iterator[RunningAgent]:
    """The real agent process with the test bed's fake CLIs first on its PATH."""
    with run_agent(
        tmp_path, cli_path=fake_cli_bin_dir(), env={TESTBED_URL_ENV: oauth_server.url}
    ) as running:
        yield running


# -- the controller's database: every controller test runs on SQLite and on PostgreSQL -------


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


# -- settings ------------------------------------------------------------------------------


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
def state_dir() -> Iterator[Path]:
    """A short state dir (agent sockets must fit 108 bytes); no instance may be left in it."""
    root = Path(tempfile.mkdtemp(prefix="rcli-c-"))
    yield root
    left = asyncio.run(reap_all(root))
    shutil.rmtree(root, ignore_errors=True)
    assert left == [], f"instances left behind (now reaped): {left}"


@pytest.fixture
def make_settings(database_url: str, state_dir: Path) -> Callable[..., Settings]:
    """Settings for a VM test: fake backend, no pool, a fast health monitor; override any."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = dict(
            environment="test", state_dir=state_dir, database_url=database_url, backend="fake",
            warm_pool_auth=0, warm_pool_cli=0, health_interval_seconds=0.2,
            health_failures_allowed=2,
        )  # fmt: skip
        values.update(overrides)
        return Settings(**values)

    return make


# -- the ladder's rungs with default settings ------------------------------------------------


@pytest.fixture
def controller(settings: Settings) -> Iterator[Controller]:
    """Rung 1: the app with its default services."""
    with run_controller(settings) as running:
        yield running


@pytest.fixture
def harness(
    make_settings: Callable[..., Settings], oauth_server: OAuthServer
) -> Iterator[Controller]:
    """Rung 3: a controller with the VM and login services, the test bed as the provider."""
    with auth_controller(make_settings(), oauth_server) as running:
        yield running


@pytest.fixture
def world(settings: Settings, oauth_server: OAuthServer) -> Iterator[Controller]:
    """Rung 3 with prompts: a controller with every service, for prompt runs."""
    with prompt_world(settings, oauth_server) as running:
        yield running
