"""Fixtures for the test bed's own tests: a fresh fake server, a fake user's HOME, CLI runners.

Every subprocess runs in its own session with a deadline and is killed with
its whole process group; a PTY runner drives the CLIs that need a terminal.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from remotecli.testbed import TESTBED_URL_ENV, OAuthServer, fake_cli_bin_dir
from tests.support.poll import NotYet, eventually
from tests.testbed.clis import port_free


@pytest.fixture
def server() -> Iterator[OAuthServer]:
    with OAuthServer(device_interval=0.2) as srv:
        yield srv


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


@pytest.fixture
def cli_env(server: OAuthServer, home: Path) -> dict[str, str]:
    """A clean environment: only what a CLI in the VM would see, plus the test bed URL."""
    return {
        "PATH": f"{fake_cli_bin_dir()}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "TERM": "xterm-256color",
        TESTBED_URL_ENV: server.url,
    }


@pytest.fixture
def codex_ports_free() -> Iterator[None]:
    """Codex's login ports are free before the test and again after it."""
    assert port_free(1455) and port_free(1457), "1455/1457 busy before the test"
    yield
    with contextlib.suppress(NotYet):  # the assert says which
        eventually("1455/1457 to be free", lambda: port_free(1455) and port_free(1457), 5)
    assert port_free(1455) and port_free(1457), "a codex login listener outlived its test"
