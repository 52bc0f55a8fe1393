"""A whole login for each provider through the agent INSIDE a container, against the test bed.

The container has a private network. The test bed's OAuth server also
answers inside it, at the very same URL (a socket bound in the container's
network namespace at the server's port, served by this process): the fake
CLIs in the container and the "browser" in this test see one address.
"""

from __future__ import annotations

import pytest

from remotecli.testbed import TESTBED_URL_ENV, OAuthServer
from remotecli.testbed.netns import listen_in_netns
from remotecli.vmm.agentclient import AgentClient
from remotecli.vmm.nspawn.backend import NspawnInstance
from tests.vmm.lab import Lab, login_every_provider

pytestmark = pytest.mark.anyio


async def test_every_provider_logs_in_inside_a_container(lab: Lab) -> None:
    with OAuthServer() as server:
        instance = await lab.boot("login", agent_env={TESTBED_URL_ENV: server.url})
        assert isinstance(instance, NspawnInstance)
        leader = instance.container_pid()
        assert leader is not None
        port = int(server.url.rsplit(":", 1)[1])
        server.serve_on(listen_in_netns(f"/proc/{leader}/ns/net", port))

        async with AgentClient(instance.agent_socket, instance.spec.agent_token) as agent:
            await login_every_provider(agent, server, wait_seconds=20)

        # The CLIs ran as the unprivileged user: the files in the instance are its own.
        owner = await instance.exec_in(["stat", "-c", "%U %a", "/home/cli/.codex/auth.json"])
        assert owner.stdout.split() == ["cli", "600"]
