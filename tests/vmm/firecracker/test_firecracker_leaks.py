"""Firecracker start/destroy cycles leave nothing on the host (tests/support/leakcheck.py looks).

The guest cannot boot on this host (no VT-x), but a start is real up to
InstanceStart: the jailer's chroot and cgroups, the per-VM netns and its TAP,
the bind mount of the unjailed VM dir, the API and vsock sockets, firecracker
itself. Each combination (jailer or not, network or not) is cycled, then a
VM is SIGKILLed and destroyed, a start fails mid-way, and a lost handle is reaped.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from remotecli.errors import VmError
from remotecli.vmm.firecracker.backend import FirecrackerInstance
from tests.support.leakcheck import LeakWatch, no_leaks
from tests.vmm.firecracker.lab import FcLab

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(180)]
#: (jailer, network) combinations, each started and destroyed this many times.
COMBINATIONS = [(False, False), (False, True), (True, False), (True, True)]
ROUNDS = 2


async def started(fc_lab: FcLab, watch: LeakWatch, what: str, *, jail: bool, network: bool) -> (
    FirecrackerInstance
):  # fmt: skip
    fc_lab.jail, fc_lab.network = jail, network
    instance = fc_lab.track(fc_lab.backend().create(fc_lab.spec(watch.name(what))))
    await instance.start()  # configured and InstanceStart sent: firecracker runs the vCPU
    assert (await instance.api.instance_info())["state"] == "Running"
    return instance


async def test_firecracker_cycles_leave_nothing(fc_lab: FcLab, tmp_path: Path) -> None:
    # The backend's roots stay (state dirs, the VM dir, the jails of this firecracker binary):
    # what is under them must go.
    roots = [fc_lab.root / "state", fc_lab.root / "vm", fc_lab.root / "j" / "firecracker"]
    async with no_leaks(*roots) as watch:
        # While a jailed, networked VM runs, the checker sees what it holds (not vacuous).
        running = await started(fc_lab, watch, "seen", jail=True, network=True)
        seen = {category.split(" (")[0] for category in watch.check().leaks}
        assert running.jail is not None and running.jail.cgroup_dirs
        # (Its sockets are in its own netns: /proc/net/unix here does not list them.)
        expected = {"processes", "files and dirs under the scope", "network namespaces", "cgroups"}
        assert expected <= seen, f"a running VM's resources not seen:\n{watch.report.render()}"
        await running.destroy()

        for _ in range(ROUNDS):
            for jail, network in COMBINATIONS:
                instance = await started(fc_lab, watch, "fc", jail=jail, network=network)
                await instance.destroy()

        # Killed, not destroyed: firecracker dies by SIGKILL; destroy cleans up after it.
        for jail in (False, True):
            killed = await started(fc_lab, watch, "killed", jail=jail, network=True)
            assert killed.process.pid is not None
            os.kill(killed.process.pid, signal.SIGKILL)
            await killed.destroy()

        # A start that fails mid-way (after netns, jail and disk, at the API socket): a
        # "firecracker" that exits at once. Everything it had set up is taken down again.
        broken = tmp_path / "firecracker"
        broken.write_text("#!/bin/sh\necho 'simulated firecracker failure' >&2\nexit 3\n")
        broken.chmod(0o755)
        for jail in (False, True):
            fc_lab.jail, fc_lab.network = jail, True
            failing = fc_lab.track(
                fc_lab.backend(firecracker=broken).create(fc_lab.spec(watch.name("broken")))
            )
            with pytest.raises(VmError):
                await failing.start()

        # A lost handle (the controller restarted): found and reaped by a fresh backend.
        lost = await started(fc_lab, watch, "lost", jail=True, network=True)
        fresh = fc_lab.backend()
        assert lost.spec.instance_id in await fresh.list_running()
        await fresh.reap(lost.spec.instance_id)
        await lost.destroy()  # the old handle: idempotent
    count = ROUNDS * len(COMBINATIONS) + 6
    print(f"{count} firecracker starts, nothing left; checked: {watch.report.checked}")
