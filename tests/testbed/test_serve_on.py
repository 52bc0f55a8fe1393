"""The OAuth server can also answer inside a network namespace, at the same URL."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from remotecli.testbed import OAuthServer
from remotecli.testbed.netns import listen_in_netns


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"rcli-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, timeout=10)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True, timeout=10)


def test_serve_on_a_socket_inside_another_namespace(netns: str) -> None:
    with OAuthServer() as server:
        port = int(server.url.rsplit(":", 1)[1])
        server.serve_on(listen_in_netns(f"/run/netns/{netns}", port))
        code = (
            f"import urllib.request; print(urllib.request.urlopen('{server.url}/healthz').status)"
        )
        inside = subprocess.run(
            ["ip", "netns", "exec", netns, sys.executable, "-S", "-c", code],
            capture_output=True, text=True, timeout=20,
        )  # fmt: skip
        assert (inside.returncode, inside.stdout.strip()) == (0, "200"), inside.stderr
        assert ("GET", "/healthz", 200) in server.request_log()
