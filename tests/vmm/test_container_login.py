"""A whole login for each provider through the agent INSIDE a container, against the test bed.

The container has a private network. The test bed's OAuth server also
answers inside it, at the very same URL (a socket bound in the container's
network namespace at the server's port, served by this process): the fake
CLIs in the container and the "browser" in this test see one address.
"""

from __future__ import annotations

import json

import pytest

from remotecli.agentclient import AgentClient
from remotecli.testbed import TESTBED_URL_ENV, OAuthServer, login
from remotecli.testbed.netns import listen_in_netns
from remotecli.vmm.nspawn import NspawnInstance
from tests.conftest import PASSWORD, USER
from tests.vmm.conftest import Lab

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
            for provider in ("claude_code", "codex", "gemini_cli"):
                session = await agent.request("POST", f"/auth/{provider}", json={"waitSeconds": 20})
                assert session["phase"] == "awaiting_user", session
                outcome = login(session["oauthUrl"], USER, PASSWORD)
                answer = (
                    {"callbackUrl": outcome.redirect_url}
                    if session["mode"] == "localhost_callback"
                    else {"code": outcome.pasted}
                )
                done = await agent.request(
                    "POST", f"/sessions/{session['sessionId']}/code", json=answer
                )
                assert done["phase"] == "authenticated", done
                creds = await agent.request("GET", "/credentials", params={"provider": provider})
                assert creds["complete"] is True
                assert all(f["mode"] == "0600" for f in creds["files"])

            issued = {t.access_token for t in server.issued_tokens("codex")}
            creds = await agent.request("GET", "/credentials", params={"provider": "codex"})
            auth = json.loads(creds["files"][0]["content"])
            assert auth["tokens"]["access_token"] in issued

        # The CLIs ran as the unprivileged user: the files in the instance are its own.
        owner = await instance.exec_in(["stat", "-c", "%U %a", "/home/cli/.codex/auth.json"])
        assert owner.stdout.split() == ["cli", "600"]
