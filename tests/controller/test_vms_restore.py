"""Claims that restore the golden snapshot (controller/golden.py), on SQLite and PostgreSQL.

The fake backend with ``snapshots=True`` follows the snapshot contract with
the real agent (vmm/fake.py says what it does not emulate); the QEMU tests in
tests/vmm restore real memory snapshots.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from remotecli.controller.db.models import VmRole
from remotecli.controller.settings import Settings
from remotecli.testbed import fake_cli_bin_dir
from remotecli.vmm.agentclient import AgentClient, AgentRequestError
from remotecli.vmm.base import Deadlines, Phase
from remotecli.vmm.fake.backend import FakeBackend, FakeFault
from tests.support.controller import FAST, Controller, vm_controller
from tests.support.poll import eventually

#: A deaf restored agent is given up on after 2 s.
QUICK = Deadlines({**FAST.per_phase, Phase.AGENT_READY: 2.0})


def snapshot_ready(ctl: Controller) -> dict[str, Any] | None:
    status: dict[str, Any] = ctl.client().get("/api/vms").json()["snapshot"]
    return status if status["state"] == "ready" else None


def test_claims_restore_the_golden_snapshot_and_clones_are_themselves(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(warm_pool_auth=0)
    backend = FakeBackend(settings.state_dir / "fake", cli_path=fake_cli_bin_dir(), snapshots=True)
    with vm_controller(settings, backend=backend) as ctl:
        ctl.add_user("alice")
        status = eventually("the golden snapshot", lambda: snapshot_ready(ctl))
        assert set(status["bootPhases"]) >= {"VMM_STARTED", "AGENT_READY"}
        snapshot = ctl.read(lambda: ctl.vms.golden.current)
        assert snapshot is not None

        handle = ctl.call(ctl.vms.claim(VmRole.CLI, user_id="alice"))
        row = ctl.vm(handle.vm_id)
        assert (handle.origin, row["origin"]) == ("restore", "restore")
        assert row["claim"]["tried"] == [
            {"source": "pool", "result": "empty"},
            {"source": "restore", "result": "ok", "vmId": handle.vm_id},
        ]
        assert list(row["phases"]["durations"]) == ["VMM_STARTED", "STATE_RESTORED", "AGENT_READY"]
        assert set(row["phases"]["skipped"]) == {"KERNEL_BOOTED", "INIT_STARTED", "AGENT_LISTENING"}

        # The controller's client speaks with the clone's own token; the golden one is dead.
        assert ctl.call(handle.agent.logins()) == []

        async def golden_refused() -> int:
            async with AgentClient(handle.instance.agent_endpoint, snapshot.golden_token) as old:
                try:
                    await old.logins()
                except AgentRequestError as exc:
                    return exc.status
            return 200

        assert ctl.call(golden_refused()) == 401
        # The snapshot lives in the state dir, its secret file private.
        meta = Path(settings.state_dir) / "snapshots" / snapshot.directory.name / "golden.json"
        assert oct(meta.stat().st_mode & 0o777) == "0o600"


def test_a_failed_restore_falls_back_to_a_cold_start_with_the_evidence(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(warm_pool_auth=0)
    backend = FakeBackend(settings.state_dir / "fake", cli_path=fake_cli_bin_dir(), snapshots=True)
    with vm_controller(settings, backend=backend, deadlines=QUICK) as ctl:
        eventually("the golden snapshot", lambda: snapshot_ready(ctl))
        backend.fail_next(FakeFault.NEVER_LISTENS)

        handle = ctl.call(ctl.vms.claim(VmRole.AUTH))

        row = ctl.vm(handle.vm_id)
        assert row["origin"] == "cold"
        tried = row["claim"]["tried"]
        assert [(t["source"], t["result"]) for t in tried] == [
            ("pool", "empty"), ("restore", "failed"), ("cold", "started"),
        ]  # fmt: skip
        assert tried[1]["code"] == "vm_not_ready"
        failed = [
            v for v in ctl.client().get("/api/vms", params={"all": "true"}).json()["vms"]
            if v["state"] == "failed"
        ]  # fmt: skip
        assert len(failed) == 1 and failed[0]["origin"] == "restore"
        detail = ctl.vm(failed[0]["id"])
        assert detail["error"]["cause"] == "restore_agent_silent"
        assert ctl.read(lambda: ctl.vms.golden.failures) == 1


def test_snapshots_off_says_so_in_the_claim(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(warm_pool_auth=0, snapshots=False)
    backend = FakeBackend(settings.state_dir / "fake", cli_path=fake_cli_bin_dir(), snapshots=True)
    with vm_controller(settings, backend=backend) as ctl:
        handle = ctl.call(ctl.vms.claim(VmRole.AUTH))
        tried = ctl.vm(handle.vm_id)["claim"]["tried"]
        assert tried[1] == {
            "source": "restore", "result": "skipped",
            "reason": "snapshots are off (REMOTECLI_SNAPSHOTS=0)",
        }  # fmt: skip
        assert ctl.client().get("/api/vms").json()["snapshot"]["state"] == "disabled"
