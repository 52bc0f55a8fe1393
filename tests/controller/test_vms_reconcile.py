"""A controller restart after a crash: DB and running instances are reconciled, nothing orphaned.

The first controller runs in a child process and dies with ``os._exit`` (no
shutdown: what an OOM kill leaves) holding a CLI VM, two auth VMs, a warm
one and one mid-start, with a stray instance beside them. Behind its back one
VM then vanishes and one agent dies. The second controller adopts the live
VMs (their tokens open, their agents answer), marks the vanished one, and
reaps the dead one, the half-started one and the stray.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from pathlib import Path

from remotecli.controller.db.models import VmRole
from remotecli.controller.settings import Settings
from remotecli.vmm.fake.backend import FakeBackend
from tests.support import procfs
from tests.support.controller import vm_controller
from tests.support.controller_process import crash_controller


def _iid(vm_id: str) -> str:
    return vm_id.replace("_", "-")


def test_restart_adopts_live_vms_and_cleans_up_the_rest(
    make_settings: Callable[..., Settings], state_dir: Path
) -> None:
    settings = make_settings(warm_pool_auth=1)
    root = state_dir / "fake"
    left = crash_controller(settings, "mixed")
    kept, vanishing, dying = left["kept"], left["vanishing"], left["dying"]
    pooled, starting = left["pooled"], left["starting"]
    assert sorted(p.name for p in root.iterdir()) == sorted(
        [*map(_iid, (kept, vanishing, dying, pooled, starting)), "stray-1"]
    )
    asyncio.run(FakeBackend(root).reap(_iid(vanishing)))
    os.killpg(left["dyingPid"], signal.SIGKILL)

    with vm_controller(settings) as ctl:
        report = ctl.vms.reconciled
        assert report is not None
        assert sorted(report.adopted) == sorted([kept, pooled])
        assert report.stopped == {
            vanishing: "gone after restart: its instance no longer runs",
            dying: report.stopped[dying],
            starting: "not adopted after restart: it was starting when the controller stopped",
        }
        assert report.stopped[dying].startswith(
            "not adopted after restart: its agent does not answer GET /health (cannot connect"
        )
        assert sorted(report.reaped) == sorted(["stray-1", _iid(dying), _iid(starting)])
        assert report.errors == []
        assert not procfs.alive(left["strayPid"]) and not procfs.alive(left["dyingPid"])
        assert sorted(p.name for p in root.iterdir()) == sorted(map(_iid, (kept, pooled)))

        # alice's CLI VM is hers again, and its agent takes the token kept sealed in the DB
        again = ctl.call(ctl.vms.cli_vm("alice"))
        assert again.vm_id == kept
        assert isinstance(ctl.call(again.agent.logins()), list)
        assert ctl.call(ctl.vms.claim(VmRole.AUTH)).vm_id == pooled
        states = {v: ctl.vm(v)["state"] for v in (kept, vanishing, dying, starting)}
        assert states == {kept: "claimed", vanishing: "stopped", dying: "stopped",
                          starting: "stopped"}  # fmt: skip
        assert ctl.vm(kept)["health"]["lastOkAt"] is not None
        assert ctl.vm(vanishing)["stopReason"] == report.stopped[vanishing]
    assert list(root.iterdir()) == []
