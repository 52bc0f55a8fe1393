"""E8 and E11 in a real container: the private network and the CLIs' uid, seen from outside.

E8: a fake CLI inside the container tries to reach a listener the test
opens on every address of the host (tests/security/probe.py): first at the
host's 127.0.0.1 directly, then sent by a redirect to each of the host's
other addresses. Nothing arrives. The control: a relay bound inside the
container's own namespace at that same 127.0.0.1 port gets the CLI's request
and lets the prompt succeed, so the request did go out.
E11: while a CLI runs inside the container, the host's /proc shows its
process (nspawn has no user namespace: ids are the host's): uid and gid 1000
in every slot, HOME=/home/cli, and it cannot read the VM token.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from remotecli.testbed import TESTBED_URL_ENV
from remotecli.testbed.netns import listen_in_netns
from remotecli.vmm.agentclient import AgentClient
from remotecli.vmm.nspawn.backend import NspawnInstance
from tests.security.probe import (
    REPLY,
    check_reach,
    give_claude_credentials,
    host_addresses,
    relay_on,
    reply_of,
    run_claude,
    trap,
)
from tests.support import procfs
from tests.support.poll import eventually_async
from tests.vmm.lab import Lab

pytestmark = pytest.mark.anyio

CLI_UID = 1000


async def boot(lab: Lab, name: str, env: dict[str, str]) -> NspawnInstance:
    instance = await lab.boot(name, agent_env=env)
    assert isinstance(instance, NspawnInstance)
    return instance


async def test_a_cli_in_a_container_reaches_no_host_address(lab: Lab) -> None:
    with trap() as host:
        url = f"http://127.0.0.1:{host.port}"
        instance = await boot(lab, "net", {TESTBED_URL_ENV: url})
        async with AgentClient(instance.agent_socket, instance.spec.agent_token) as agent:
            await give_claude_credentials(agent)
            # The container's 127.0.0.1 is its own: the host's listener there is out of reach.
            direct = await run_claude(agent)
            assert REPLY not in reply_of(direct), f"the CLI got an answer: {direct}"
            assert host.connections() == 0, "the host's 127.0.0.1 listener was reached"

            leader = instance.container_pid()
            assert leader is not None
            inside = listen_in_netns(f"/proc/{leader}/ns/net", host.port)
            with relay_on(inside) as relay:
                targets = host_addresses()
                assert targets, "the host has no address but loopback to try"
                await check_reach(agent, relay, host, targets)

        links = await instance.exec_in(["ls", "/sys/class/net"])
        assert links.stdout.split() == ["lo"], f"the container has links {links.stdout.split()}"
        routes = await instance.exec_in(["cat", "/proc/net/route", "/proc/net/ipv6_route"])
        assert [ln for ln in routes.stdout.splitlines()[1:] if " lo" not in f" {ln}"] == [], (
            routes.stdout
        )


def facts_of(pid: int) -> tuple[dict[str, str], list[bytes]]:
    """A process's /proc status fields and its environment."""
    return procfs.status(pid), procfs.environ(pid)


def cli_processes(leader: int) -> list[int]:
    """Host pids of the fake Claude CLI processes in the container of ``leader``."""
    pidns = procfs.namespace(leader, "pid")
    found = []
    for process in procfs.processes():
        with contextlib.suppress(OSError):
            if procfs.namespace(process.pid, "pid") != pidns:
                continue
            if any(arg.endswith("/claude") for arg in process.argv[:2]):
                found.append(process.pid)
    return found


async def test_a_cli_in_a_container_runs_as_the_unprivileged_user(lab: Lab) -> None:
    instance = await boot(lab, "uid", {TESTBED_URL_ENV: "http://127.0.0.1:9"})
    leader = instance.container_pid()
    assert leader is not None
    async with AgentClient(instance.agent_socket, instance.spec.agent_token) as agent:
        body = {"provider": "claude_code", "prompt": "hang", "apiKey": "test-key"}
        events = agent.stream("POST", "/prompts", json=body)
        started = await anext(events)
        assert started["type"] == "run.started", started
        try:
            pids: list[int] = await eventually_async(
                "a claude process in the container while the run hangs",
                lambda: asyncio.to_thread(cli_processes, leader),
                10,
                interval=0.1,
            )
            for pid in pids:
                status, environ = facts_of(pid)
                assert status["Uid"].split() == [str(CLI_UID)] * 4, (pid, status["Uid"])
                assert status["Gid"].split() == [str(CLI_UID)] * 4, (pid, status["Gid"])
                assert "0" not in status["Groups"].split(), (pid, status["Groups"])
                assert int(status["CapEff"], 16) == 0, (pid, status["CapEff"])
                assert b"HOME=/home/cli" in environ, environ
            agent_uid = (await instance.exec_in(["stat", "-c", "%u %a", "/run/agent/token"])).stdout
            assert agent_uid.split() == ["0", "600"], agent_uid
            read = await instance.exec_in(
                ["setpriv", f"--reuid={CLI_UID}", f"--regid={CLI_UID}", "--clear-groups",
                 "cat", "/run/agent/token"],
                check=False,
            )  # fmt: skip
            assert read.exit_code != 0 and instance.spec.agent_token not in read.stdout, read
            assert "Permission denied" in read.stderr, read.stderr
        finally:
            await agent.request("DELETE", f"/prompts/{started['runId']}")
            await events.aclose()
