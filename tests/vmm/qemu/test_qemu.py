"""The qemu backend against real QEMU: one golden cold boot, its snapshot, clones, logins, faults.

Runs under TCG here (no hardware virtualization): the golden boot and the
checklist's boot cost ~20 s each, every clone well under a second.
"""

from __future__ import annotations

import json
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from remotecli.errors import NotReady, VmError
from remotecli.validation.checklist import validate
from remotecli.vmm import statedir
from remotecli.vmm.agentclient import AgentClient, AgentRequestError
from remotecli.vmm.base import Deadlines, Phase, Snapshot
from remotecli.vmm.endpoint import AgentEndpoint
from remotecli.vmm.qemu.backend import QemuInstance
from remotecli.vmm.restore import hostname_for
from tests.vmm.lab import PROVIDERS, login_every_provider
from tests.vmm.qemu.lab import QemuLab, VmImage, backend_with, find_leftovers

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(300)]


def identity_events(instance: QemuInstance) -> list[dict[str, object]]:
    """The agent's ``agent.identity`` log records on the clone's console (what the guest did)."""
    found = []
    for line in instance.console_path.read_text(errors="replace").splitlines():
        if '"event": "agent.identity"' in line:
            found.append(json.loads(line[line.index("{") :]))
    return found


async def test_the_golden_cold_boot_is_timed_phase_by_phase_and_saved(
    golden: Snapshot, qlab: QemuLab
) -> None:
    assert list(golden.boot_phases) == [
        "VMM_STARTED", "KERNEL_BOOTED", "INIT_STARTED", "AGENT_LISTENING", "AGENT_READY",
    ]  # fmt: skip
    assert all(seconds >= 0 for seconds in golden.boot_phases.values())
    state = golden.directory / "state"
    assert stat.S_IMODE(state.stat().st_mode) == 0o600  # guest memory: the golden token is in it
    assert golden.meta["state_bytes"] == state.stat().st_size > 0
    assert (golden.directory / "disk.qcow2").is_file()
    assert golden.meta["machine"]["accel"] == qlab.backend.accel
    assert golden.backend == "qemu"


async def test_a_clone_is_restored_with_its_own_token_and_hostname(
    golden: Snapshot, qlab: QemuLab
) -> None:
    clone = await qlab.restore("clone", golden)
    assert list(clone.readiness.reached) == [
        Phase.VMM_STARTED, Phase.STATE_RESTORED, Phase.AGENT_READY,
    ]  # fmt: skip
    assert Phase.KERNEL_BOOTED in clone.readiness.skipped
    async with AgentClient(clone.agent_endpoint, clone.spec.agent_token) as own:
        assert (await own.health()).status == "ok"
        await own.request("GET", "/sessions")
    async with AgentClient(clone.agent_endpoint, golden.golden_token) as old:
        with pytest.raises(AgentRequestError) as refused:
            await old.request("GET", "/sessions")
    assert refused.value.status == 401
    [event] = identity_events(clone)
    assert event["hostname"] == hostname_for(clone.spec.instance_id)
    # A restarted controller finds the agent and the process in the state dir.
    meta = clone.dir.read_meta()
    assert AgentEndpoint.from_json(meta["agent_endpoint"]) == clone.agent_endpoint
    assert meta["pid"] == clone.pid and meta["snapshot"] == str(golden.directory)
    assert await qlab.backend.list_running() == [clone.spec.instance_id]


async def test_two_clones_of_one_snapshot_answer_independently(
    golden: Snapshot, qlab: QemuLab
) -> None:
    a = await qlab.restore("twin-a", golden)
    b = await qlab.restore("twin-b", golden)
    assert a.host_port != b.host_port and a.spec.agent_token != b.spec.agent_token
    for mine, other in ((a, b), (b, a)):
        async with AgentClient(mine.agent_endpoint, mine.spec.agent_token) as agent:
            await agent.request("GET", "/sessions")
        async with AgentClient(mine.agent_endpoint, other.spec.agent_token) as agent:
            with pytest.raises(AgentRequestError):
                await agent.request("GET", "/sessions")
    hostnames = {identity_events(c)[0]["hostname"] for c in (a, b)}
    assert hostnames == {hostname_for(a.spec.instance_id), hostname_for(b.spec.instance_id)}
    for clone in (a, b):
        await clone.destroy()


async def test_clones_draw_different_random_numbers(golden: Snapshot, qlab: QemuLab) -> None:
    ids = []
    for name in ("rand-a", "rand-b"):
        clone = await qlab.restore(name, golden)
        async with AgentClient(clone.agent_endpoint, clone.spec.agent_token) as agent:
            # A login session's id is secrets.token_urlsafe(16) inside the guest.
            session = await agent.request("POST", "/auth/codex", json={"waitSeconds": 0})
            ids.append(session["sessionId"])
        await clone.destroy()
    assert ids[0] != ids[1]


async def test_every_provider_logs_in_through_the_forward(golden: Snapshot, qlab: QemuLab) -> None:
    clone = await qlab.restore("login", golden)
    async with AgentClient(clone.agent_endpoint, clone.spec.agent_token) as agent:
        await login_every_provider(agent, qlab.server, wait_seconds=30)


async def test_the_checklist_passes_on_a_cold_booted_vm(vm_image: VmImage, qlab: QemuLab) -> None:
    report = await validate(
        qlab.backend, vm_image.image.rootfs, PROVIDERS, instance_id="validate-q"
    )
    qlab.others.append("validate-q")
    assert report.not_ready is None
    assert [(c.name, c.evidence) for c in report.checks if not c.ok] == []
    assert len(report.checks) == 13  # as on nspawn: the checklist asks only the agent
    assert report.readiness is not None and Phase.KERNEL_BOOTED in report.readiness.reached


async def test_destroy_is_idempotent_and_leaves_nothing(golden: Snapshot, qlab: QemuLab) -> None:
    clone = await qlab.restore("gone", golden)
    pid, port, directory = clone.pid, clone.host_port, clone.dir.path
    assert (directory / "disk.qcow2").is_file()
    await clone.destroy()
    await clone.destroy()
    assert pid is not None and not statedir.pid_alive(pid, clone.name)
    assert not directory.exists()
    assert find_leftovers([clone.name], [port]) == []


# -- faults ----------------------------------------------------------------------------


async def test_qemu_refusing_to_start_says_why_in_its_own_words(
    qlab: QemuLab, vm_image: VmImage
) -> None:
    backend = backend_with(qlab, vm_image, vmlinuz=Path("/nonexistent/vmlinuz"))
    instance = qlab.track(backend.create(qlab.spec("badkernel")))
    with pytest.raises(VmError) as failed:
        await instance.start()
    assert "could not open kernel file '/nonexistent/vmlinuz'" in failed.value.message
    assert failed.value.message.count("/nonexistent/vmlinuz") == 1  # said once, in QEMU's words
    assert not instance.dir.path.exists()


async def test_an_initramfs_failure_ends_the_wait_with_its_console_line(
    qlab: QemuLab, vm_image: VmImage, tmp_path: Path
) -> None:
    blank = tmp_path / "blank.raw"  # no ext4 label: /init finds no root disk and powers off
    with blank.open("wb") as fh:
        fh.truncate(64 << 20)
    backend = backend_with(qlab, vm_image, disk=blank)
    spec = replace(qlab.spec("noroot"), deadlines=Deadlines({p: 120.0 for p in Phase}))
    instance = qlab.track(backend.create(spec))
    await instance.start()
    with pytest.raises(NotReady) as failed:
        await instance.wait_ready()
    assert failed.value.cause == "vm_init_failed"
    assert "remotecli-init: FAILED: no disk labelled remotecli-root" in failed.value.console_tail
    assert failed.value.waiting_for == "INIT_STARTED"
    assert instance.exit_code() is not None  # QEMU exited (-no-reboot), no 120 s wait


def test_layers_are_refused_and_the_network_is_restricted(qlab: QemuLab) -> None:
    with pytest.raises(VmError, match="cannot apply extra layers"):
        qlab.backend.create(qlab.spec("layered", layers=(Path("/tmp"),)))
    instance = qlab.backend.create(qlab.spec("argv"))
    instance.machine = {
        "accel": "tcg", "memory_mib": 512, "vcpus": 1, "kernel": "k", "initrd": "i", "append": "",
    }  # fmt: skip
    instance.host_port = 12345
    argv = instance.launch_argv()
    netdev = argv[argv.index("-netdev") + 1].split(",")
    assert netdev[:3] == ["user", "id=net0", "restrict=on"]
    assert "hostfwd=tcp:127.0.0.1:12345-:8080" in netdev
    port = qlab.backend.forwards[0].host_port
    assert any(
        o.startswith(f"guestfwd=tcp:10.0.2.100:{port}-cmd:") and o.endswith(f"127.0.0.1 {port}")
        for o in netdev
    )
