"""The fake backend runs the real agent, with the same readiness contract and simulated faults."""

from __future__ import annotations

import httpx
import pytest

from remotecli.errors import NotReady
from remotecli.testbed import TESTBED_URL_ENV, OAuthServer
from remotecli.vmm.base import Deadlines, InstanceState, Phase
from remotecli.vmm.fake.backend import SKIPPED, FakeBackend, FakeFault, FakeInstance
from tests.support import procfs
from tests.vmm.lab import Lab

pytestmark = pytest.mark.anyio

SHORT = Deadlines({**Deadlines().per_phase, Phase.AGENT_LISTENING: 2.0})


def fake(lab: Lab) -> FakeBackend:
    assert isinstance(lab.backend, FakeBackend)
    return lab.backend


async def test_real_agent_reaches_ready_with_the_vm_phases_skipped(fake_lab: Lab) -> None:
    instance = await fake_lab.boot("fake-ready")

    assert instance.state == InstanceState.READY
    assert list(instance.readiness.reached) == [
        Phase.VMM_STARTED,
        Phase.AGENT_LISTENING,
        Phase.AGENT_READY,
    ]
    assert instance.readiness.skipped == SKIPPED
    transport = instance.agent_endpoint.transport()
    headers = {"Authorization": f"Bearer {instance.spec.agent_token}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://agent") as client:
        assert (await client.get("/health")).json()["status"] == "ok"
        assert (await client.get("/sessions", headers=headers)).status_code == 200


async def test_agent_runs_the_test_beds_fake_clis(fake_lab: Lab, oauth_server: OAuthServer) -> None:
    instance = await fake_lab.boot("fake-clis", agent_env={TESTBED_URL_ENV: oauth_server.url})
    transport = instance.agent_endpoint.transport()
    headers = {"Authorization": f"Bearer {instance.spec.agent_token}"}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://agent", headers=headers, timeout=30
    ) as client:
        login = (await client.post("/auth/claude_code", json={"waitSeconds": 15})).json()

    assert login["phase"] == "awaiting_user", login
    assert login["oauthUrl"].startswith(oauth_server.url)


async def test_an_agent_that_never_listens_misses_its_deadline(fake_lab: Lab) -> None:
    fake(fake_lab).fail_next(FakeFault.NEVER_LISTENS)
    instance = await fake_lab.start(fake_lab.spec("fake-hang", deadlines=SHORT))

    with pytest.raises(NotReady) as caught:
        await instance.wait_ready()

    error = caught.value
    assert (error.last_phase, error.waiting_for, error.deadline) == (
        "VMM_STARTED",
        "AGENT_LISTENING",
        2.0,
    )
    assert "never said it listens" in error.hint
    assert "FakeFault.NEVER_LISTENS" in error.console_tail
    assert instance.state == InstanceState.FAILED


async def test_an_agent_that_crashes_fails_at_once_with_its_traceback(fake_lab: Lab) -> None:
    fake(fake_lab).fail_next(FakeFault.CRASHES)
    instance = await fake_lab.start(fake_lab.spec("fake-crash"))

    with pytest.raises(NotReady) as caught:
        await instance.wait_ready()

    error = caught.value
    # It did not wait the deadline out: it stopped at the agent's exit, and says so.
    assert "(Stopped waiting: the fake process exited with code" in error.hint
    assert "The agent crashed at start: RuntimeError: simulated crash" in error.hint
    assert "the fake process exited with code 1" in error.hint
    assert error.unit_state is not None and "ActiveState=failed" in error.unit_state


async def test_fail_next_applies_to_the_next_instance_only(fake_lab: Lab) -> None:
    backend = fake(fake_lab)
    backend.fail_next(FakeFault.CRASHES)

    first = backend.create(fake_lab.spec("fake-a"))
    second = backend.create(fake_lab.spec("fake-b"))

    assert (first.fault, second.fault) == (FakeFault.CRASHES, FakeFault.NONE)


async def test_destroy_stops_the_agent_removes_everything_and_twice_is_fine(
    fake_lab: Lab,
) -> None:
    instance = await fake_lab.boot("fake-destroy")
    assert isinstance(instance, FakeInstance)
    pid = instance.pid

    await instance.destroy()
    await instance.destroy()

    assert instance.exit_code() is not None
    assert (instance.dir.path.exists(), instance.agent_socket.exists()) == (False, False)
    assert pid is not None and not procfs.alive(pid)


async def test_a_restarted_controller_reaps_what_it_finds(fake_lab: Lab) -> None:
    instance = await fake_lab.boot("fake-orphan")
    assert isinstance(instance, FakeInstance)
    restarted = FakeBackend(fake(fake_lab).state_root)

    found = await restarted.list_running()
    await restarted.reap(instance.spec.instance_id)

    assert instance.spec.instance_id in found
    assert instance.spec.instance_id not in await restarted.list_running()
    assert instance.pid is not None and not procfs.alive(instance.pid)
