"""QEMU restore/destroy cycles leave nothing on the host (tests/support/leakcheck.py looks).

Clones of the module's golden snapshot (one cold boot, ~20 s under TCG; each
restore ~0.5 s): restored to AGENT_READY and destroyed; one SIGKILLed and then
destroyed; a start QEMU refuses (no kernel file) taken down again.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from remotecli.errors import VmError
from remotecli.vmm.base import Snapshot
from tests.support.leakcheck import no_leaks
from tests.vmm.qemu.lab import QemuLab, VmImage, backend_with, find_leftovers

pytestmark = pytest.mark.anyio
RESTORES = 3


async def test_restore_cycles_leave_nothing(
    golden: Snapshot, qlab: QemuLab, vm_image: VmImage
) -> None:
    async with no_leaks(qlab.backend.state_root) as watch:
        ports = []
        for _ in range(RESTORES):
            clone = await qlab.restore(watch.name("q"), golden)
            ports.append(clone.host_port)
            await clone.destroy()

        # Killed, not destroyed: QEMU dies by SIGKILL; destroy cleans up after it.
        killed = await qlab.restore(watch.name("q-killed"), golden)
        assert killed.pid is not None
        os.kill(killed.pid, signal.SIGKILL)
        await killed.destroy()

        # A start QEMU refuses (its kernel file is missing): nothing of it stays.
        backend = backend_with(qlab, vm_image, vmlinuz=Path("/nonexistent/vmlinuz"))
        refused = qlab.track(backend.create(qlab.spec(watch.name("q-refused"))))
        with pytest.raises(VmError, match="could not open kernel file"):
            await refused.start()

        names = [i.name for i in qlab.created if watch.tag in i.name]
        assert find_leftovers(names, [*ports, killed.host_port]) == []
    print(f"{RESTORES + 2} QEMU starts, nothing left; checked: {watch.report.checked}")
