"""Fixtures of the fuzz tests: one real controller and one real agent per module.

Schemathesis runs many examples per operation; starting a controller (and
migrating its database) for each would cost more than the fuzzing itself, so
each test module shares one, and every example checks the state it relies on.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine

from remotecli.controller.settings import Settings
from remotecli.testbed import TESTBED_URL_ENV, OAuthServer, fake_cli_bin_dir
from tests.support.agent_harness import RunningAgent, run_agent
from tests.support.controller import Controller, prompt_world
from tests.support.pg import create_database

__all__ = ["fuzz_agent", "fuzz_db", "fuzz_world"]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def fuzz_world(request: pytest.FixtureRequest, oauth_server: OAuthServer) -> Iterator[Controller]:
    """The controller with every service on the fake backend, no warm pool, on each database."""
    # A short state dir: the fake backend's agent sockets live under it (108 bytes).
    state = Path(tempfile.mkdtemp(prefix="rcli-fz-"))
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{state / 'remotecli.db'}"
    else:
        url = create_database(request.getfixturevalue("pg_cluster"))
    settings = Settings(
        environment="test",
        state_dir=state,
        database_url=url,
        backend="fake",
        warm_pool_auth=0,
    )
    try:
        with prompt_world(settings, oauth_server) as world:
            yield world
    finally:
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="module")
def fuzz_db(fuzz_world: Controller) -> Iterator[Engine]:
    """The controller's database, read by the test itself (synchronous drivers)."""
    url = fuzz_world.settings.database_url or ""
    engine = create_engine(url.replace("sqlite+aiosqlite:", "sqlite:"))
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def fuzz_agent(
    tmp_path_factory: pytest.TempPathFactory, oauth_server: OAuthServer
) -> Iterator[RunningAgent]:
    """The real agent process on TCP (schemathesis speaks HTTP over TCP)."""
    with run_agent(
        tmp_path_factory.mktemp("agent"),
        cli_path=fake_cli_bin_dir(),
        env={TESTBED_URL_ENV: oauth_server.url},
        tcp=True,
    ) as running:
        yield running
