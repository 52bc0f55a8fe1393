"""The nspawn backend boots the golden image to AGENT_READY and leaves nothing behind."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from remotecli.images import layout
from remotecli.vmm.base import Instance, InstanceState, Phase
from remotecli.vmm.nspawn.backend import NspawnBackend, NspawnInstance
from remotecli.vmm.readiness import probe_health
from tests.support import procfs
from tests.vmm.lab import Lab

pytestmark = pytest.mark.anyio


def as_nspawn(instance: Instance) -> NspawnInstance:
    assert isinstance(instance, NspawnInstance)
    return instance


def leftovers(instance: NspawnInstance) -> list[str]:
    """Everything an instance could leave on the host, looked up independently of destroy()."""
    found = []
    if instance.pid is not None and procfs.alive(instance.pid):
        found.append(f"process {instance.pid}")
    found += [str(d) for d in instance.cgroup.dirs()]
    if instance.dir.path.exists():
        found.append(str(instance.dir.path))
    if instance.agent_socket.exists():
        found.append(str(instance.agent_socket))
    mounts = Path("/proc/self/mounts").read_text()
    found += [ln for ln in mounts.splitlines() if str(instance.dir.path) in ln]
    found += [f"process {p.pid}: {p.argv!r}" for p in procfs.naming(instance.machine)]
    return found


async def test_boots_to_agent_ready_with_phase_timings(lab: Lab) -> None:
    instance = await lab.boot("ready")

    assert instance.state == InstanceState.READY
    reached = instance.readiness.reached
    expected = [Phase.VMM_STARTED, Phase.INIT_STARTED, Phase.AGENT_LISTENING, Phase.AGENT_READY]
    assert expected == list(reached)
    assert [reached[p] for p in expected] == sorted(reached[p] for p in expected)
    assert (instance.readiness.skipped) == {
        Phase.KERNEL_BOOTED: "a container shares the host kernel"
    }
    assert [p.value for p in expected] == list(instance.readiness.durations())


async def test_agent_answers_the_seeds_health_json_over_the_bound_socket(lab: Lab) -> None:
    instance = await lab.boot("health")
    transport = instance.agent_endpoint.transport()
    async with httpx.AsyncClient(transport=transport, base_url="http://agent") as client:
        health = await client.get("/health")
        anonymous = await client.get("/sessions")
        authorized = await client.get(
            "/sessions", headers={"Authorization": f"Bearer {instance.spec.agent_token}"}
        )

    assert health.status_code == 200
    body = health.json()
    assert {"status", "timestamp", "activeSessions"} <= set(body)
    assert (body["status"], body["activeSessions"]) == ("ok", 0)
    assert anonymous.status_code == 401  # the token the backend wrote is the one it checks
    assert authorized.status_code == 200


async def test_systemd_is_pid1_and_the_agent_unit_is_active(lab: Lab) -> None:
    instance = as_nspawn(await lab.boot("pid1"))

    comm = await instance.exec_in(["cat", "/proc/1/comm"])
    unit = await instance.unit_state()

    assert comm.stdout.strip() == "systemd"
    assert unit is not None
    assert (
        unit.properties["ActiveState"],
        unit.properties["SubState"],
        unit.properties["UnitFileState"],
    ) == ("active", "running", "enabled")
    assert unit.system_state == "running"


async def test_agent_env_reaches_the_agent_and_vsock_stays_off(lab: Lab) -> None:
    instance = await lab.boot("env", agent_env={"REMOTECLI_AGENT_ARGS": "--tcp 127.0.0.1:8081"})

    events = [
        json.loads(line.split(": ", 1)[1])
        for line in instance.console_path.read_text().splitlines()
        if '"event": "agent.listening"' in line
    ]
    assert [f"unix:{layout.AGENT_SOCKET}", "tcp:127.0.0.1:8081"] == events[-1]["listeners"]


async def test_console_is_captured_from_the_first_byte(lab: Lab) -> None:
    instance = as_nspawn(await lab.boot("console"))

    first = instance.console_path.read_text().splitlines()[0]
    assert f"Spawning container {instance.machine} on {instance.dir.path / 'root'}." == first


async def test_destroy_leaves_nothing_and_twice_is_fine(lab: Lab) -> None:
    instance = as_nspawn(await lab.boot("destroy"))
    assert leftovers(instance) != []  # the check sees a live instance

    await instance.destroy()
    await instance.destroy()

    assert instance.state == InstanceState.STOPPED
    assert leftovers(instance) == []


async def test_ten_at_once_all_healthy_then_nothing_left(lab: Lab) -> None:
    specs = [lab.spec(f"many{i}") for i in range(10)]
    instances = await asyncio.gather(*(lab.start(spec) for spec in specs))
    await asyncio.gather(*(i.wait_ready() for i in instances))

    probes = await asyncio.gather(*(probe_health(i.agent_endpoint) for i in instances))
    assert [p.ok for p in probes] == [True] * 10

    await asyncio.gather(*(i.destroy() for i in instances))
    assert [x for i in instances for x in leftovers(as_nspawn(i))] == []
    assert isinstance(lab.backend, NspawnBackend)
    ids = {i.spec.instance_id for i in instances}
    assert [p for p in lab.backend.state_root.iterdir() if p.name in ids] == []


async def test_a_restarted_controller_finds_and_reaps_running_instances(lab: Lab) -> None:
    instance = as_nspawn(await lab.boot("orphan"))
    assert isinstance(lab.backend, NspawnBackend)
    restarted = NspawnBackend(lab.backend.state_root)

    found = await restarted.list_running()
    await restarted.reap(instance.spec.instance_id)

    assert [instance.spec.instance_id] == found
    assert await restarted.list_running() == []
    assert leftovers(instance) == []
