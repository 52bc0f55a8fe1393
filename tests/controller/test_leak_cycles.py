"""Claim/destroy cycles through the real controller leave nothing (tests/leakcheck.py looks).

The whole controller life is inside the watch (uvicorn thread, database pool,
warm pool, health monitor), on SQLite and PostgreSQL: claims from the pool and
cold, DELETE through the API, a VM whose agent is SIGKILLed and replaced by
the health monitor, a claim whose agent never listens; then the controller
stops. Nothing of it may stay: no agent process, thread, fd, socket or file.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from remotecli.controller.models import VmRole
from remotecli.controller.runtime import make_backend
from remotecli.controller.settings import Settings
from remotecli.errors import NotReady
from remotecli.vmm.fake import FakeBackend, FakeFault
from tests.controller.vm_harness import VmController, poll, vm_controller
from tests.leakcheck import no_leaks

CYCLES = 30


def _row_if(ctl: VmController, vm_id: str, state: str) -> dict[str, Any] | None:
    row = ctl.vm(vm_id)
    return row if row["state"] == state else None


def test_claim_and_delete_cycles_leave_nothing(
    make_settings: Callable[..., Settings], state_dir: Path
) -> None:
    settings = make_settings(warm_pool_auth=1)
    backend = make_backend("fake", settings)
    assert isinstance(backend, FakeBackend)
    deleted: list[str] = []
    # The backend's state root: the controller's own files (vault key, admin token) stay.
    with no_leaks(state_dir / "fake") as watch, vm_controller(settings, backend=backend) as ctl:
        ctl.create_user("alice")
        for i in range(CYCLES):
            if i % 10 == 9:
                handle = ctl.call(ctl.manager.cli_vm("alice"))
            else:
                handle = ctl.call(ctl.manager.claim(VmRole.AUTH))
            response = ctl.api().delete(f"/api/vms/{handle.vm_id}")
            assert response.status_code == 200, response.text
            assert response.json()["state"] == "stopped", response.json()
            deleted.append(handle.vm_id)

        # Killed, not destroyed: the health monitor finds it dead and cleans up.
        victim = ctl.call(ctl.manager.claim(VmRole.AUTH))
        pid = getattr(victim.instance, "pid", None)
        assert isinstance(pid, int)
        os.killpg(pid, signal.SIGKILL)
        poll("the killed VM marked failed", lambda: _row_if(ctl, victim.vm_id, "failed"))

        # A claim whose agent never listens: given up on, its instance destroyed.
        backend.fail_next(FakeFault.NEVER_LISTENS)
        with pytest.raises(NotReady):
            ctl.call(ctl.manager.claim(VmRole.CLI))

        poll("a warm VM", lambda: ctl.pool(VmRole.AUTH))
        running = sorted(p.name for p in (state_dir / "fake").iterdir())
        assert running == [ctl.pool(VmRole.AUTH)[0].replace("_", "-")], running
        rows = ctl.api().get("/api/vms", params={"all": "true"}).json()["vms"]
        stopped = {v["id"] for v in rows if v["stopReason"] == "deleted by admin"}
        assert stopped == set(deleted)
    print(f"{CYCLES} claims deleted, one killed, one never ready; checked: {watch.report.checked}")
