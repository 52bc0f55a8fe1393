"""The VM manager on the fake backend (the real agent as a host process), SQLite and PostgreSQL.

Claims (pool, then cold, with the path recorded), readiness failures with their
evidence, the pool's backoff, the health monitor, hooks, DELETE and the metrics.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from remotecli.controller.db.models import VmRole
from remotecli.controller.fleet.manager import VmHandle
from remotecli.controller.fleet.runtime import make_backend
from remotecli.controller.settings import Settings
from remotecli.errors import NotReady
from remotecli.vmm.fake.backend import FakeBackend, FakeFault
from tests.support.controller import Controller, vm_controller
from tests.support.poll import eventually


def pid_of(handle: VmHandle) -> int:
    pid = getattr(handle.instance, "pid", None)
    assert isinstance(pid, int)
    return pid


def seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def fake_backend(settings: Settings) -> FakeBackend:
    backend = make_backend("fake", settings)
    assert isinstance(backend, FakeBackend)
    return backend


def test_claim_cold_then_from_the_warm_pool(make_settings: Callable[..., Settings]) -> None:
    with vm_controller(make_settings(warm_pool_auth=1)) as ctl:
        ctl.add_user("alice")
        pooled = eventually("a warm auth VM", lambda: ctl.pool(VmRole.AUTH))[0]

        cold = ctl.call(ctl.vms.claim(VmRole.CLI, user_id="alice"))
        warm = ctl.call(ctl.vms.claim(VmRole.AUTH))

        assert (cold.origin, warm.origin, warm.vm_id) == ("cold", "pool", pooled)
        cold_row, warm_row = ctl.vm(cold.vm_id), ctl.vm(warm.vm_id)
        assert cold_row["claim"]["tried"] == [
            {"source": "pool", "result": "empty"},
            {"source": "restore", "result": "skipped",
             "reason": "the fake backend has no snapshots"},
            {"source": "cold", "result": "started"},
        ]  # fmt: skip
        assert warm_row["claim"]["tried"] == [{"source": "pool", "result": "ok", "vmId": pooled}]
        assert (cold_row["state"], cold_row["userId"]) == ("claimed", "alice")
        assert (warm_row["state"], warm_row["userId"]) == ("claimed", None)
        assert list(cold_row["phases"]["durations"]) == [
            "VMM_STARTED", "AGENT_LISTENING", "AGENT_READY",
        ]  # fmt: skip
        assert set(cold_row["phases"]["skipped"]) == {"KERNEL_BOOTED", "INIT_STARTED"}
        # The point of the pool: a claim without a boot. The warm claim's trace took the VM
        # that was READY in the pool before it; only the cold claim's trace started one.
        assert (warm_row["claim"]["origin"], cold_row["claim"]["origin"]) == ("pool", "cold")
        assert [t["source"] for t in warm_row["claim"]["tried"] if t["result"] == "started"] == []
        assert "startSeconds" in cold_row["timings"]  # its boot was part of its claim
        # the user's CLI VM stays the same one until it goes away
        assert ctl.call(ctl.vms.cli_vm("alice")).vm_id == cold.vm_id

        refill = eventually("the pool to refill", lambda: ctl.pool(VmRole.AUTH))
        assert refill[0] not in (pooled, cold.vm_id)
        listed = ctl.client().get("/api/vms").json()
        assert (listed["backend"]["name"], listed["pool"]["auth"]["target"]) == ("fake", 1)
        origins = {v["id"]: v["origin"] for v in listed["vms"]}
        assert origins == {cold.vm_id: "cold", warm.vm_id: "pool", refill[0]: "pool"}

        metrics = ctl.client().get("/metrics").text
        for line in (
            'remotecli_vm_start_seconds_count{origin="cold"} 1.0',
            'remotecli_vm_start_seconds_count{origin="pool"} 1.0',
            'remotecli_vm_readiness_phase_seconds_count{backend="fake",phase="AGENT_READY"} 3.0',
            'remotecli_vms{role="cli",state="claimed"} 1.0',
            'remotecli_vms{role="auth",state="ready"} 1.0',
            'remotecli_pool_ready{role="auth"} 1.0',
            'remotecli_pool_target{role="auth"} 1.0',
        ):
            assert line in metrics


def test_a_vm_that_never_listens_fails_with_its_evidence(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    backend = fake_backend(settings)
    with vm_controller(settings, backend=backend) as ctl:
        backend.fail_next(FakeFault.NEVER_LISTENS)
        with pytest.raises(NotReady) as caught:
            ctl.call(ctl.vms.claim(VmRole.AUTH))

        vm_id = caught.value.instance_id.replace("-", "_")
        row = ctl.vm(vm_id)
        assert (row["state"], row["origin"], row["claim"]["origin"]) == ("failed", "cold", "cold")
        assert row["error"] == caught.value.to_dict()
        assert (row["error"]["cause"], row["error"]["waitingFor"]) == (
            "agent_silent", "AGENT_LISTENING",
        )  # fmt: skip
        assert "FakeFault.NEVER_LISTENS" in row["error"]["consoleTail"]
        assert row["stopReason"] == "not ready: agent_silent, waited for AGENT_LISTENING"
        console = ctl.client().get(f"/api/vms/{vm_id}/console")
        assert console.headers["content-type"].startswith("text/plain")
        assert "FakeFault.NEVER_LISTENS" in console.text
        assert not (settings.state_dir / "fake" / caught.value.instance_id).exists()
        metrics = ctl.client().get("/metrics").text
        assert 'remotecli_vm_failures_total{cause="agent_silent"} 1.0' in metrics
        assert ctl.call(ctl.vms.claim(VmRole.AUTH)).origin == "cold"  # healthy again


def test_a_failing_warm_start_backs_off_instead_of_looping(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(warm_pool_auth=1)
    backend = fake_backend(settings)
    backend.fail_next(FakeFault.CRASHES, count=3)
    with vm_controller(settings, backend=backend, pool_backoff=(0.2, 5.0)) as ctl:
        eventually("a warm VM after 3 failures", lambda: ctl.pool(VmRole.AUTH))

        rows = ctl.client().get("/api/vms", params={"all": "true"}).json()["vms"]
        failed = sorted((v for v in rows if v["state"] == "failed"), key=lambda v: v["createdAt"])
        assert [v["stopReason"] for v in failed] == [
            "not ready: agent_crashed, waited for AGENT_LISTENING"
        ] * 3
        gaps = [seconds(b["createdAt"]) - seconds(a["stoppedAt"]) for a, b in pairwise(failed)]
        assert gaps[0] >= 0.2 and gaps[1] >= 0.4, gaps  # 0.2 s, then 0.4 s: never a hot loop
        # Each crash ended its start at once (not at the 2 s deadline), and says so.
        hints = [ctl.vm(v["id"])["error"]["hint"] for v in failed]
        assert all("(Stopped waiting: the fake process exited" in h for h in hints), hints
        status = ctl.client().get("/api/vms").json()["pool"]["auth"]
        assert (status["ready"], status["consecutiveFailures"], status["lastError"]) == (1, 0, None)


def test_the_health_monitor_replaces_a_vm_whose_agent_died(
    make_settings: Callable[..., Settings],
) -> None:
    with vm_controller(make_settings(warm_pool_auth=1)) as ctl:
        ctl.add_user("bob")
        pooled = eventually("a warm VM", lambda: ctl.pool(VmRole.AUTH))[0]
        cli = ctl.call(ctl.vms.cli_vm("bob"))
        warm = ctl.read(lambda: ctl.vms.get(pooled))
        assert warm is not None
        for handle in (warm, cli):
            os.killpg(pid_of(handle), signal.SIGKILL)

        eventually("a new warm VM", lambda: [v for v in ctl.pool(VmRole.AUTH) if v != pooled])
        for vm_id in (pooled, cli.vm_id):
            row = eventually("the row to say failed", lambda i=vm_id: _failed(ctl, i))  # type: ignore[misc]
            assert row["stopReason"].startswith("unhealthy: 2 failed health checks in a row")
            assert row["error"]["code"] == "vm_unhealthy"
            assert len(row["error"]["checks"]) == 2
            assert "cannot connect" in row["error"]["checks"][-1]
            assert row["health"]["consecutiveFailures"] == 2
            assert row["health"]["lastError"].startswith("cannot connect")
        assert ctl.call(ctl.vms.cli_vm("bob")).vm_id != cli.vm_id
        metrics = ctl.client().get("/metrics").text
        assert 'remotecli_vm_failures_total{cause="unhealthy"} 2.0' in metrics


def _failed(ctl: Controller, vm_id: str) -> dict[str, Any] | None:
    row = ctl.vm(vm_id)
    return row if row["state"] == "failed" else None


def test_destroy_runs_hooks_and_delete_is_idempotent(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    with vm_controller(settings) as ctl:
        ctl.add_user("carol")
        seen: list[tuple[str, str]] = []

        async def sync_back(handle: VmHandle) -> None:
            seen.append((handle.vm_id, (await handle.agent.health()).status))

        async def broken(handle: VmHandle) -> None:
            raise RuntimeError("the vault is down")

        ctl.vms.add_before_destroy(sync_back)
        ctl.vms.add_before_destroy(broken)
        handle = ctl.call(ctl.vms.cli_vm("carol"))
        ctl.call(ctl.vms.touch(handle.vm_id))
        directory = settings.state_dir / "fake" / handle.vm_id.replace("_", "-")
        assert directory.is_dir()

        deleted = ctl.client().delete(f"/api/vms/{handle.vm_id}")

        assert deleted.status_code == 200, deleted.text
        body = deleted.json()
        assert (body["state"], body["stopReason"]) == ("stopped", "deleted by admin")
        assert [e.split(".<locals>.")[-1] for e in body["error"]["hookErrors"]] == [
            "broken: RuntimeError: the vault is down"
        ]
        assert seen == [(handle.vm_id, "ok")]
        assert body["lastUsedAt"] is not None and body["stoppedAt"] is not None
        assert "destroySeconds" in body["timings"]
        assert not directory.exists()
        console = ctl.client().get(f"/api/vms/{handle.vm_id}/console", params={"lines": 2})
        assert len(console.text.splitlines()) <= 2 and console.text.strip()
        again = ctl.client().delete(f"/api/vms/{handle.vm_id}")
        assert (again.status_code, again.json()["stopReason"]) == (200, "deleted by admin")
        assert seen == [(handle.vm_id, "ok")]  # the hooks ran once
        assert ctl.read(lambda: ctl.vms.get(handle.vm_id)) is None


def test_stop_destroys_every_vm(make_settings: Callable[..., Settings], state_dir: Path) -> None:
    with vm_controller(make_settings(warm_pool_auth=1, warm_pool_cli=1)) as ctl:
        ctl.add_user("dave")
        eventually("both pools", lambda: ctl.pool(VmRole.AUTH) and ctl.pool(VmRole.CLI))
        ctl.call(ctl.vms.cli_vm("dave"))  # from the pool, which refills
        eventually("both pools again", lambda: ctl.pool(VmRole.AUTH) and ctl.pool(VmRole.CLI))
        ids = [v["id"] for v in ctl.client().get("/api/vms").json()["vms"]]
    assert len(ids) >= 3
    assert list((state_dir / "fake").iterdir()) == []
    with vm_controller(make_settings()) as ctl:
        rows = {v["id"]: v for v in ctl.client().get("/api/vms", params={"all": 1}).json()["vms"]}
        assert {rows[i]["stopReason"] for i in ids} == {"controller stopped"}
        assert ctl.vms.reconciled is not None
        assert ctl.vms.reconciled.to_dict() == {
            "adopted": [], "stopped": {}, "reaped": [], "errors": [],
        }  # fmt: skip


def test_an_auth_vm_claimed_past_any_login_deadline_is_destroyed(
    make_settings: Callable[..., Settings],
) -> None:
    with vm_controller(make_settings(auth_session_seconds=0.3)) as ctl:
        lost = ctl.call(ctl.vms.claim(VmRole.AUTH))

        row = eventually("the lost auth VM to go", lambda: _stopped(ctl, lost.vm_id), timeout=10)

        assert row["stopReason"].startswith("auth VM still claimed after ")
        assert row["stopReason"].endswith("its login was lost")


def _stopped(ctl: Controller, vm_id: str) -> dict[str, Any] | None:
    row = ctl.vm(vm_id)
    return row if row["state"] == "stopped" else None
