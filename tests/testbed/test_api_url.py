"""$REMOTECLI_TESTBED_API_URL: the fake CLIs call the API address, print the browser address.

Real providers sign users in on one host and serve tokens on another; a CLI in
a VM reaches the test bed through a forward (``10.0.2.100:PORT``) while the
browser on the host opens ``127.0.0.1:PORT``.
"""

from __future__ import annotations

import socket

import pytest

from remotecli.testbed import TESTBED_URL_ENV, OAuthServer, approve_device
from remotecli.testbed.fake_clis import common
from tests.testbed.clis import PASSWORD, USER, bin_path, run_cli, spawn

CODEX = bin_path("codex")


def test_api_url_moves_only_the_browser_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TESTBED_URL_ENV, "http://127.0.0.1:9000/")
    monkeypatch.setenv(common.API_ENV, "http://10.0.2.100:9000")
    assert common.api_url("http://127.0.0.1:9000/codex/oauth/token") == (
        "http://10.0.2.100:9000/codex/oauth/token"
    )
    assert common.api_url("http://127.0.0.1:9000") == "http://10.0.2.100:9000"
    # Another origin (a port that merely starts alike, another host) is left alone.
    assert common.api_url("http://127.0.0.1:90001/x") == "http://127.0.0.1:90001/x"
    assert common.api_url("http://127.0.0.1:1455/auth/callback") == (
        "http://127.0.0.1:1455/auth/callback"
    )
    monkeypatch.delenv(common.API_ENV)
    assert common.api_url("http://127.0.0.1:9000/x") == "http://127.0.0.1:9000/x"


@pytest.mark.usefixtures("codex_ports_free")
def test_device_login_polls_the_api_address_and_prints_the_browser_one(
    server: OAuthServer, cli_env: dict[str, str]
) -> None:
    api = socket.create_server(("127.0.0.1", 0))
    stop = server.serve_on(api)
    api_url = f"http://127.0.0.1:{api.getsockname()[1]}"
    env = {**cli_env, common.API_ENV: api_url}
    with spawn([CODEX, "login", "--device-auth"], env) as cli:
        lines = [ln.strip() for ln in cli.read_until(r"cancel\.$", stream="stderr").splitlines()]
        verification = lines[
            lines.index("1. Open this link in your browser and sign in to your account") + 1
        ]
        user_code = lines[lines.index("2. Enter this one-time code (expires in 15 minutes)") + 1]
        assert verification == f"{server.url}/codex/device"  # the browser's address
        approve_device(verification, user_code, USER, PASSWORD)
        assert cli.proc.wait(timeout=10) == 0
        assert cli.rest().endswith("Successfully logged in\n")
    stop()


def test_an_unreachable_api_address_is_what_the_cli_reports(cli_env: dict[str, str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"  # bound, never listening: refused
        result = run_cli([CODEX, "login", "--device-auth"], {**cli_env, common.API_ENV: dead})
    assert result.returncode == 1
    assert f"error sending request for url ({dead}/codex/oauth/device/code)" in result.stderr
