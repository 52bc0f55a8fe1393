"""The VM manager on the real nspawn backend with the test image: claims, teardown, adoption.

SQLite only: the database paths are the fake backend tests' business; this
file checks what only real containers show (systemd as PID 1, cgroups,
overlay mounts, a clean shutdown) in one controller crash and restart.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from remotecli.controller.db.models import VmRole
from remotecli.controller.settings import Settings
from remotecli.vmm.statedir import mounts_under
from tests.support.controller import vm_controller
from tests.support.controller_process import crash_controller


@pytest.mark.timeout(900)  # a cold machine builds the test image first (~1 min)
def test_nspawn_claim_destroy_and_adoption_after_a_crash(
    nspawn_settings: Callable[..., Settings], state_dir: Path
) -> None:
    root = state_dir / "nspawn"
    left = crash_controller(nspawn_settings(warm_pool_auth=1), "nspawn")
    assert {left["warm"], left["cold"]} <= {p.name.replace("-", "_") for p in root.iterdir()}

    with vm_controller(nspawn_settings(), deadlines=None) as ctl:
        report = ctl.vms.reconciled
        assert report is not None and report.errors == []
        assert {left["warm"], left["cold"]} <= set(report.adopted)
        warm, cold = ctl.vm(left["warm"]), ctl.vm(left["cold"])
        print(f"\nnspawn claim: pool {warm['timings']['claimSeconds'] * 1000:.0f} ms, "
              f"cold {cold['timings']['claimSeconds'] * 1000:.0f} ms "
              f"(boot {cold['timings']['startSeconds'] * 1000:.0f} ms)")  # fmt: skip
        assert (warm["origin"], cold["origin"]) == ("pool", "cold")
        # The pool's claim took a booted VM; only the cold claim's trace started one.
        assert warm["claim"]["tried"] == [{"source": "pool", "result": "ok", "vmId": left["warm"]}]
        assert cold["claim"]["tried"][-1] == {"source": "cold", "result": "started"}
        assert "INIT_STARTED" in cold["phases"]["durations"]
        assert cold["phases"]["skipped"] == {"KERNEL_BOOTED": "a container shares the host kernel"}

        adopted = ctl.call(ctl.vms.cli_vm("alice"))
        assert adopted.vm_id == left["cold"]
        assert isinstance(ctl.call(adopted.agent.logins()), list)

        # the crashed controller may have refilled its pool in time: that VM was adopted too
        refilled = set(report.adopted) - {left["warm"], left["cold"]}
        fresh = ctl.call(ctl.vms.claim(VmRole.AUTH))
        assert (fresh.origin, fresh.vm_id in refilled) in {("cold", False), ("pool", True)}
        directory = root / fresh.vm_id.replace("_", "-")
        assert ctl.client().delete(f"/api/vms/{fresh.vm_id}").json()["state"] == "stopped"
        assert not directory.exists() and mounts_under(directory) == []
        assert "Reached target" in ctl.client().get(f"/api/vms/{fresh.vm_id}/console").text
    assert list(root.iterdir()) == []
