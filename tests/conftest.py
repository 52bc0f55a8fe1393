"""Fixtures shared by the suites: the test bed's OAuth server and the real agent."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from remotecli.testbed import DEFAULT_USERS, TESTBED_URL_ENV, OAuthServer, fake_cli_bin_dir
from tests.agent_harness import RunningAgent, run_agent

USER, PASSWORD = next(iter(DEFAULT_USERS.items()))


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
