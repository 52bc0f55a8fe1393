"""Many create/destroy cycles leave nothing on the host (tests/support/leakcheck.py looks).

The fake backend at scale (sequential and concurrent cycles, logins running at
destroy, agents killed instead of destroyed, crashing and hung starts, a lost
handle reaped), nspawn (clean cycles, a launcher killed mid-life, a boot that
fails), and the leak checker itself, given leaks to find.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from remotecli.errors import NotReady, VmError
from remotecli.testbed import TESTBED_URL_ENV, OAuthServer, fake_cli_bin_dir
from remotecli.vmm import hostcheck
from remotecli.vmm.agentclient import AgentClient
from remotecli.vmm.base import Backend, Deadlines, Instance, InstanceSpec, InstanceState, Phase
from remotecli.vmm.fake.backend import FakeBackend, FakeFault
from remotecli.vmm.nspawn.backend import NspawnBackend, NspawnInstance
from tests.support.leakcheck import LeakWatch, held, no_leaks
from tests.vmm import layers
from tests.vmm.lab import BOOT_DEADLINES, FAULT_DEADLINES

#: Sequential and concurrent fake cycles: 100 boots of the real agent (~0.2 s each here).
SEQUENTIAL = 40
CONCURRENT_BATCHES, BATCH = 6, 10
NSPAWN_CYCLES = 5
#: A hung agent is given up on after 1 s.
HANG = Deadlines({**BOOT_DEADLINES.per_phase, Phase.AGENT_LISTENING: 1.0})


@pytest.fixture
def root() -> Iterator[Path]:
    """A short state root (socket paths < 108 bytes); the leak checks look inside it."""
    with tempfile.TemporaryDirectory(prefix="rlk-") as tmp:
        yield Path(tmp)


def spec(watch: LeakWatch, what: str, *, deadlines: Deadlines = BOOT_DEADLINES,
         env: dict[str, str] | None = None, image: Path = Path("/"),
         layers: tuple[Path, ...] = ()) -> InstanceSpec:  # fmt: skip
    return InstanceSpec(
        image=image, instance_id=watch.name(what), agent_token=os.urandom(18).hex(),
        deadlines=deadlines, agent_env=env or {}, layers=layers,
    )  # fmt: skip


async def cycle(backend: Backend, spec: InstanceSpec) -> Instance:
    instance = backend.create(spec)
    try:
        await instance.start()
        await instance.wait_ready()
    finally:
        await instance.destroy()
    assert instance.state is InstanceState.STOPPED, f"{spec.instance_id}: {instance.state}"
    return instance


async def start_login(instance: Instance, provider: str) -> dict[str, object]:
    """A login left waiting for the user: the CLI runs in the agent's PTY when destroy comes."""
    async with AgentClient(instance.agent_endpoint, instance.spec.agent_token) as agent:
        session = await agent.request("POST", f"/auth/{provider}", json={"waitSeconds": 15})
    assert session["phase"] == "awaiting_user", session
    return session


# -- the checker checks -----------------------------------------------------------------


def _unified_cgroup() -> Path | None:
    return hostcheck.unified_root(hostcheck.cgroup_layout(hostcheck.LiveHost()))


def test_the_checker_names_each_leak_it_is_given(root: Path) -> None:
    """A stray file, child process, fd, thread, netns and cgroup: each is reported."""
    stop = threading.Event()
    watch = no_leaks(root, settle=0.5)
    with pytest.raises(AssertionError) as caught, watch:
        (root / "stray.txt").write_text("left")
        child = subprocess.Popen(["sleep", "60"])
        fd = os.open(root / "stray.txt", os.O_RDONLY)
        thread = threading.Thread(target=stop.wait, name="stray-thread")
        thread.start()
        netns = watch.name("ns")
        subprocess.run(["ip", "netns", "add", netns], check=True)
        unified = _unified_cgroup()
        cgroup = unified / f"remotecli-{watch.name('cg')}" if unified else None
        if cgroup is not None:
            cgroup.mkdir()
    left = list(held(watch))
    try:
        expected = [
            ("processes", f"pid {child.pid} "),
            ("threads of this process", "stray-thread"),
            ("open fds of this process", f"fd {fd} -> {root / 'stray.txt'}"),
            ("files and dirs under the scope", str(root / "stray.txt")),
            ("network namespaces", netns),
        ]
        if cgroup is not None:
            expected.append(("cgroups", str(cgroup)))
        missed = [e for e in expected if not any(x.startswith(e[0]) and e[1] in x for x in left)]
        assert missed == [], f"the checker missed {missed}; it reported:\n{caught.value}"
        assert "resources left behind" in str(caught.value)
    finally:
        child.kill()
        child.wait()
        os.close(fd)
        stop.set()
        thread.join()
        subprocess.run(["ip", "netns", "delete", netns], check=True)
        if cgroup is not None:
            cgroup.rmdir()
        (root / "stray.txt").unlink()

    # Cleaned up, the same host state passes, and the report lists what it looked at.
    with no_leaks(root) as clean:
        pass
    assert clean.report.leaks == {}
    rendered = clean.report.render()
    for category in ("processes", "threads", "open fds", "files", "unix sockets", "mounts",
                     "network namespaces", "network links", "cgroups", "loop devices",
                     "systemd machines"):  # fmt: skip
        assert category in rendered, rendered


# -- the fake backend at scale ---------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.timeout(240)
async def test_fake_cycles_leave_nothing(root: Path, oauth_server: OAuthServer) -> None:
    """Sequential and concurrent cycles; logins running at destroy (Gemini ignores SIGTERM);
    agents SIGKILLed then destroyed; crashing and hung starts; a lost handle reaped."""
    backend = FakeBackend(root, cli_path=fake_cli_bin_dir())
    env = {TESTBED_URL_ENV: oauth_server.url}
    async with no_leaks(root) as watch:
        # While an agent runs, the checker sees its process, files and socket (not vacuous).
        running = backend.create(spec(watch, "seen"))
        await running.start()
        await running.wait_ready()
        seen = set(watch.check().leaks)
        expected = {"processes", "files and dirs under the scope", "unix sockets under the scope"}
        assert expected <= seen, f"a running agent not seen:\n{watch.report.render()}"
        await running.destroy()

        for _ in range(SEQUENTIAL):
            await cycle(backend, spec(watch, "seq"))
        for _ in range(CONCURRENT_BATCHES):
            await asyncio.gather(*(cycle(backend, spec(watch, "par")) for _ in range(BATCH)))

        # Destroy while a login's CLI runs in the agent's PTY: the CLI goes too.
        for provider in ("claude_code", "gemini_cli"):
            instance = backend.create(spec(watch, "login", env=env))
            await instance.start()
            await instance.wait_ready()
            await start_login(instance, provider)
            await instance.destroy()

        # Killed, not destroyed: the agent dies by SIGKILL, then destroy cleans up after it.
        instance = backend.create(spec(watch, "killed", env=env))
        await instance.start()
        await instance.wait_ready()
        await start_login(instance, "claude_code")
        assert instance.pid is not None
        os.kill(instance.pid, signal.SIGKILL)
        await instance.destroy()

        # Failing starts: a crash at start and a hung agent past its deadline.
        backend.fail_next(FakeFault.CRASHES)
        crashed = backend.create(spec(watch, "crash"))
        await crashed.start()
        with pytest.raises(NotReady):
            await crashed.wait_ready()
        await crashed.destroy()
        backend.fail_next(FakeFault.NEVER_LISTENS)
        hung = backend.create(spec(watch, "hang", deadlines=HANG))
        await hung.start()
        with pytest.raises(NotReady):
            await hung.wait_ready()
        await hung.destroy()

        # A start that fails before its process runs: the id is taken by a stray directory.
        taken = spec(watch, "taken")
        (root / taken.instance_id).mkdir()
        with pytest.raises(VmError, match="already exists"):
            await backend.create(taken).start()
        (root / taken.instance_id).rmdir()

        # A lost handle (the controller restarted): found and reaped by a fresh backend.
        lost = backend.create(spec(watch, "lost"))
        await lost.start()
        await lost.wait_ready()
        fresh = FakeBackend(root)
        assert await fresh.list_running() == [lost.spec.instance_id]
        await fresh.reap(lost.spec.instance_id)
        assert await fresh.list_running() == []
        await lost.destroy()  # the old handle: idempotent, nothing to complain about
    print(f"{SEQUENTIAL + CONCURRENT_BATCHES * BATCH + 8} fake instances, nothing left")


# -- nspawn --------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_nspawn_cycles_leave_nothing(golden: Path, root: Path, tmp_path: Path) -> None:
    """Clean cycles; a launcher SIGKILLed (its guest left running) then destroyed; a boot
    whose agent crashes, given up on at its deadline; a lost handle reaped."""
    backend = NspawnBackend(root, stop_seconds=10.0)
    layer = layers.agent_syntax_error(tmp_path / "broken")
    async with no_leaks(root) as watch:
        for _ in range(NSPAWN_CYCLES):
            await cycle(backend, spec(watch, "ns", image=golden))

        killed = backend.create(spec(watch, "ns-killed", image=golden))
        assert isinstance(killed, NspawnInstance)
        await killed.start()
        await killed.wait_ready()
        guest = killed.container_pid()
        assert killed.pid is not None and guest is not None
        os.kill(killed.pid, signal.SIGKILL)  # the launcher only: the guest's systemd runs on
        os.kill(guest, 0)  # ProcessLookupError if the guest died with its launcher
        await killed.destroy()

        broken = backend.create(
            spec(watch, "ns-broken", image=golden, deadlines=FAULT_DEADLINES, layers=(layer,))
        )
        await broken.start()
        with pytest.raises(NotReady):
            await broken.wait_ready()
        await broken.destroy()

        lost = backend.create(spec(watch, "ns-lost", image=golden))
        await lost.start()
        await lost.wait_ready()
        await NspawnBackend(root).reap(lost.spec.instance_id)
        await lost.destroy()  # the old handle: idempotent
