"""Claim/destroy cycles through the real controller leave nothing (tests/support/leakcheck.py).

Then whole logins through the API (done, and cancelled while the CLI waits).
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

from remotecli.controller.db.models import VmRole
from remotecli.controller.fleet.runtime import make_backend
from remotecli.controller.settings import Settings
from remotecli.errors import NotReady
from remotecli.testbed import OAuthServer
from remotecli.vmm.fake.backend import FakeBackend, FakeFault
from tests.support.controller import Controller, auth_controller, vm_controller
from tests.support.leakcheck import no_leaks
from tests.support.poll import eventually
from tests.support.user import answer_for

CYCLES = 30
#: Whole logins (one mode per provider that needs no fixed host port: not Codex's
#: browser callback, whose fake CLI listens on port 1455 shared by every test).
LOGINS = [("claude_code", "paste_code"), ("gemini_cli", "paste_code"), ("codex", "device_code")]


def _row_if(ctl: Controller, vm_id: str, state: str) -> dict[str, Any] | None:
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
        ctl.add_user("alice")
        for i in range(CYCLES):
            if i % 10 == 9:
                handle = ctl.call(ctl.vms.cli_vm("alice"))
            else:
                handle = ctl.call(ctl.vms.claim(VmRole.AUTH))
            response = ctl.client().delete(f"/api/vms/{handle.vm_id}")
            assert response.status_code == 200, response.text
            assert response.json()["state"] == "stopped", response.json()
            deleted.append(handle.vm_id)

        # Killed, not destroyed: the health monitor finds it dead and cleans up.
        victim = ctl.call(ctl.vms.claim(VmRole.AUTH))
        pid = getattr(victim.instance, "pid", None)
        assert isinstance(pid, int)
        os.killpg(pid, signal.SIGKILL)
        eventually("the killed VM marked failed", lambda: _row_if(ctl, victim.vm_id, "failed"))

        # A claim whose agent never listens: given up on, its instance destroyed.
        backend.fail_next(FakeFault.NEVER_LISTENS)
        with pytest.raises(NotReady):
            ctl.call(ctl.vms.claim(VmRole.CLI))

        eventually("a warm VM", lambda: ctl.pool(VmRole.AUTH))
        running = sorted(p.name for p in (state_dir / "fake").iterdir())
        assert running == [ctl.pool(VmRole.AUTH)[0].replace("_", "-")], running
        rows = ctl.client().get("/api/vms", params={"all": "true"}).json()["vms"]
        stopped = {v["id"] for v in rows if v["stopReason"] == "deleted by admin"}
        assert stopped == set(deleted)
    print(f"{CYCLES} claims deleted, one killed, one never ready; checked: {watch.report.checked}")


def test_login_cycles_leave_nothing(
    make_settings: Callable[..., Settings], oauth_server: OAuthServer, state_dir: Path
) -> None:
    """Logins to the end (the auth VM destroyed after) and logins cancelled while the CLI
    waits for the user (Gemini ignores SIGTERM): no CLI, agent or VM file stays."""
    fake = state_dir / "fake"
    with no_leaks(fake) as watch, auth_controller(make_settings(), oauth_server) as harness:
        web = harness.client("service")
        for round_ in range(2):
            for provider, mode in LOGINS:
                started = web.post(
                    "/api/auth/start",
                    json={"userId": f"u-{round_}", "provider": provider, "mode": mode},
                )
                assert started.status_code == 201, started.text
                session = started.json()
                answer = answer_for(session)
                if answer is None:
                    final = harness.wait_phase(web, session["id"], {"authenticated", "failed"})
                else:
                    final = web.post(f"/api/auth/sessions/{session['id']}/code", json=answer).json()
                assert final["phase"] == "authenticated", final
        for provider in ("claude_code", "gemini_cli"):
            started = web.post("/api/auth/start", json={"userId": "u-c", "provider": provider})
            assert started.status_code == 201, started.text
            cancelled = web.delete(f"/api/auth/sessions/{started.json()['id']}")
            assert cancelled.status_code == 200, cancelled.text
        eventually("every auth VM gone", lambda: not any(fake.iterdir()))
    print(f"{2 * len(LOGINS)} logins, 2 cancelled; checked: {watch.report.checked}")
