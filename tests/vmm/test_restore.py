"""The restore contract (restore.py) on the fake backend: the snapshot store (snapshotdir.py),
the clones' identity refresh with the real agent, and the evidence when a restored agent is deaf.

The QEMU and Firecracker tests run the same contract with real memory snapshots.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import httpx
import pytest

from remotecli.errors import NotReady
from remotecli.testbed import fake_cli_bin_dir
from remotecli.vmm import snapshotdir
from remotecli.vmm.agentclient import AgentClient, AgentRequestError
from remotecli.vmm.base import RESTORE_SKIPPED, Deadlines, InstanceSpec, Phase, Snapshot
from remotecli.vmm.fake.backend import FakeBackend, FakeFault, FakeInstance

pytestmark = pytest.mark.anyio


def spec(name: str, **kw: object) -> InstanceSpec:
    return InstanceSpec(
        image=Path("/"), instance_id=f"{name}-{secrets.token_hex(3)}",
        agent_token=secrets.token_urlsafe(24), **kw,  # type: ignore[arg-type]
    )  # fmt: skip


@pytest.fixture
def backend(state_root: Path) -> FakeBackend:
    return FakeBackend(state_root, cli_path=fake_cli_bin_dir(), snapshots=True)


@pytest.fixture
async def golden(backend: FakeBackend, tmp_path: Path) -> Snapshot:
    store = snapshotdir.SnapshotStore(tmp_path / "snapshots")
    golden_spec = spec("golden")
    snapshot, made = await store.ensure(
        "fake-test", lambda d: backend.create_snapshot(golden_spec, d)
    )
    assert made
    return snapshot


async def test_store_makes_a_snapshot_once_and_keeps_the_golden_token_private(
    backend: FakeBackend, tmp_path: Path
) -> None:
    store = snapshotdir.SnapshotStore(tmp_path / "snapshots")
    calls: list[Path] = []

    async def make(directory: Path) -> Snapshot:
        calls.append(directory)
        return await backend.create_snapshot(spec("golden"), directory)

    first, made = await store.ensure("fake-once", make)
    again, made_again = await store.ensure("fake-once", make)
    assert (made, made_again, len(calls)) == (True, False, 1)
    assert again == first and first.directory == store.path("fake-once")
    meta = first.directory / snapshotdir.META
    assert oct(meta.stat().st_mode & 0o777) == "0o600"
    assert sorted(p.name for p in store.root.iterdir()) == [".lock", "fake-once"]
    assert set(first.boot_phases) >= {"VMM_STARTED", "AGENT_READY"}


async def test_a_failed_make_leaves_nothing(tmp_path: Path) -> None:
    store = snapshotdir.SnapshotStore(tmp_path / "snapshots")

    async def broken(directory: Path) -> Snapshot:
        (directory / "half-written").write_text("x")
        raise RuntimeError("the golden VM died")

    with pytest.raises(RuntimeError):
        await store.ensure("fake-broken", broken)
    assert sorted(p.name for p in store.root.iterdir()) == [".lock"]
    assert store.find("fake-broken") is None


async def test_clones_get_their_own_identity_and_the_golden_token_stops_working(
    backend: FakeBackend, golden: Snapshot
) -> None:
    clones = [backend.restore(spec(f"clone{i}"), golden) for i in range(2)]
    try:
        for clone in clones:
            await clone.start()
            ready = await clone.wait_ready()
            assert list(ready.reached) == [
                Phase.VMM_STARTED, Phase.STATE_RESTORED, Phase.AGENT_READY
            ]  # fmt: skip
            assert ready.skipped == dict(RESTORE_SKIPPED)
        for clone in clones:
            async with AgentClient(clone.agent_endpoint, clone.spec.agent_token) as own:
                assert (await own.request("GET", "/sessions"))["sessions"] == []
            async with AgentClient(clone.agent_endpoint, golden.golden_token) as old:
                with pytest.raises(AgentRequestError) as refused:
                    await old.request("GET", "/sessions")
                assert refused.value.status == 401
        tokens = {c.spec.agent_token for c in clones}
        assert len(tokens) == 2 and golden.golden_token not in tokens
    finally:
        for clone in clones:
            await clone.destroy()


async def test_a_deaf_restore_is_not_ready_with_its_cause(
    backend: FakeBackend, golden: Snapshot
) -> None:
    backend.fail_next(FakeFault.NEVER_LISTENS)
    short = Deadlines({**Deadlines().per_phase, Phase.AGENT_READY: 1.0})
    clone = backend.restore(spec("deaf", deadlines=short), golden)
    assert isinstance(clone, FakeInstance)
    try:
        await clone.start()
        with pytest.raises(NotReady) as caught:
            await clone.wait_ready()
    finally:
        await clone.destroy()
    error = caught.value
    assert (error.cause, error.waiting_for, error.last_phase) == (
        "restore_agent_silent", "AGENT_READY", "STATE_RESTORED"
    )  # fmt: skip
    assert "remove the snapshot" in error.hint
    assert "NEVER_LISTENS" in error.console_tail


async def test_identity_refresh_refuses_a_wrong_golden_token(
    backend: FakeBackend, golden: Snapshot
) -> None:
    wrong = Snapshot(**{**golden.__dict__, "golden_token": secrets.token_urlsafe(24)})
    clone = backend.restore(spec("wrong"), wrong)
    assert isinstance(clone, FakeInstance)
    try:
        # The clone's agent holds the token this snapshot says; the refresh uses another.
        clone.snapshot = golden
        await clone.start()
        clone.snapshot = wrong
        with pytest.raises(NotReady) as caught:
            await clone.wait_ready()
        assert caught.value.cause == "identity_refresh_failed"
        assert "the VM token is wrong" in caught.value.hint
        # The agent still holds the golden token: nothing was half-applied.
        transport = clone.agent_endpoint.transport()
        headers = {"Authorization": f"Bearer {golden.golden_token}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://agent") as client:
            assert (await client.get("/sessions", headers=headers)).status_code == 200
    finally:
        await clone.destroy()
