"""The readiness tracker: console following, /health probing, deadlines and the evidence of a miss.

The target here is a console file the test writes and a real Unix-socket
HTTP server, so the tracker is exercised exactly as a backend drives it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from remotecli.errors import NotReady
from remotecli.vmm.base import Deadlines, InstanceSpec, Phase, UnitState
from remotecli.vmm.endpoint import AgentEndpoint
from remotecli.vmm.readiness import (
    DEFAULT_MARKERS,
    ConsoleFollower,
    console_tail,
    probe_health,
    strip_ansi,
    wait_ready,
)

FIXTURES = Path(__file__).parent / "fixtures" / "boots"
SEED_HEALTH = {"status": "ok", "timestamp": "2026-01-01T00:00:00.000Z", "activeSessions": 0}
MARKERS = {**DEFAULT_MARKERS, Phase.VMM_STARTED: ("Spawning container ",)}
SKIPPED = {Phase.KERNEL_BOOTED: "a container shares the host kernel"}


class ScriptedInstance:
    """A console file and a socket that tests fill in; systemd's answer is fixed."""

    def __init__(self, tmp: Path, deadlines: Deadlines) -> None:
        self.spec = InstanceSpec(
            image=tmp, instance_id="scripted", agent_token="t" * 32, deadlines=deadlines
        )
        self.console_path = tmp / "console.log"
        self.console_path.write_bytes(b"")
        self.agent_socket = tmp / "agent.sock"
        self.agent_endpoint = AgentEndpoint.unix(self.agent_socket)
        self.exited: int | None = None

    def say(self, *lines: str) -> None:
        with self.console_path.open("a") as fh:
            fh.write("".join(line + "\r\n" for line in lines))

    def exit_code(self) -> int | None:
        return self.exited

    async def unit_state(self) -> UnitState | None:
        return UnitState("remotecli-agent.service", {"ActiveState": "active"})


async def serve_health(path: Path, body: object, status: str = "200 OK") -> asyncio.Server:
    payload = json.dumps(body).encode()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Length: {len(payload)}\r\n\r\n".encode() + payload
        )
        await writer.drain()
        writer.close()

    return await asyncio.start_unix_server(handle, path=str(path))


@pytest.fixture
async def healthy(tmp_path: Path, anyio_backend: str) -> AsyncIterator[Path]:
    server = await serve_health(tmp_path / "agent.sock", SEED_HEALTH)
    yield tmp_path / "agent.sock"
    server.close()


def test_strip_ansi_reads_a_real_coloured_console_as_text() -> None:
    raw = (FIXTURES / "colour.raw.log").read_bytes().decode()

    text = [strip_ansi(line) for line in raw.split("\n")]  # as the follower splits

    assert text[0].startswith("systemd 257.13-1~deb13u1 running in system mode (+PAM")
    assert text[4] == "Welcome to Debian GNU/Linux 13 (trixie)!"
    assert text[9] == "[  OK  ] Created slice system-getty.slice - Slice /system/getty."
    assert [t for t in text if "\x1b" in t or "\r" in t] == []


def test_follower_yields_complete_lines_even_when_utf8_is_split(tmp_path: Path) -> None:
    console = tmp_path / "console.log"
    console.write_bytes(b"")
    follower = ConsoleFollower(console)
    ellipsis = "…".encode()

    with console.open("ab") as fh:
        fh.write(b"Starting systemd-ask-password-conso" + ellipsis[:1])
    first = follower.poll()
    with console.open("ab") as fh:
        fh.write(ellipsis[1:] + b"\r\nsecond\r\nthird, unfinished")
    second = follower.poll()

    assert (first, second) == ([], ["Starting systemd-ask-password-conso…", "second"])
    assert follower.text().endswith("second\nthird, unfinished")


def test_console_tail_is_bounded_and_stripped(tmp_path: Path) -> None:
    console = tmp_path / "console.log"
    console.write_text("".join(f"\x1b[0;32mline {i}\x1b[0m\r\n" for i in range(500)))

    tail = console_tail(console, max_chars=200, max_lines=5)

    assert tail.splitlines() == [f"line {i}" for i in range(495, 500)]


@pytest.mark.anyio
async def test_probe_health_accepts_only_the_seeds_json(tmp_path: Path) -> None:
    good = await serve_health(tmp_path / "good.sock", SEED_HEALTH)
    wrong = await serve_health(tmp_path / "wrong.sock", {"ok": True})
    failing = await serve_health(tmp_path / "fail.sock", {}, "503 Service Unavailable")
    try:
        results = [
            await probe_health(tmp_path / name)
            for name in ("good.sock", "wrong.sock", "fail.sock", "missing.sock")
        ]
    finally:
        for server in (good, wrong, failing):
            server.close()

    assert [r.ok for r in results] == [True, False, False, False]
    assert "not the seed's JSON" in results[1].detail
    assert "503" in results[2].detail
    assert "cannot connect" in results[3].detail


@pytest.mark.anyio
async def test_phases_are_timed_in_order_as_the_console_and_agent_answer(
    tmp_path: Path, healthy: Path
) -> None:
    target = ScriptedInstance(tmp_path, Deadlines())
    started = time.monotonic()
    target.say("Spawning container remotecli-x on /x/root.")

    async def boot() -> None:
        await asyncio.sleep(0.1)
        target.say("systemd 257 running in system mode (+PAM)")
        await asyncio.sleep(0.1)
        target.say('python3[43]: {"event": "agent.listening", "listeners": []}')

    booting = asyncio.create_task(boot())
    readiness = await wait_ready(
        target, backend="nspawn", started_at=started, markers=MARKERS, skipped=SKIPPED
    )
    await booting

    phases = [Phase.VMM_STARTED, Phase.INIT_STARTED, Phase.AGENT_LISTENING, Phase.AGENT_READY]
    assert list(readiness.reached) == phases
    assert [readiness.reached[p] for p in phases] == sorted(readiness.reached.values())
    assert readiness.skipped == SKIPPED


@pytest.mark.anyio
async def test_a_missed_deadline_carries_the_evidence(tmp_path: Path) -> None:
    short = Deadlines({**Deadlines().per_phase, Phase.AGENT_LISTENING: 0.3})
    target = ScriptedInstance(tmp_path, short)
    target.say(
        "\x1b[0;1;39mSpawning container remotecli-x on /x/root.\x1b[0m",
        "systemd 257 running in system mode (+PAM)",
        "[  OK  ] Reached target network-online.target.",
        "         Starting remotecli-agent.service...",
    )

    with pytest.raises(NotReady) as caught:
        await wait_ready(
            target, backend="nspawn", started_at=time.monotonic(), markers=MARKERS,
            skipped=SKIPPED,
        )  # fmt: skip

    error = caught.value
    assert (error.last_phase, error.waiting_for, error.deadline) == (
        "INIT_STARTED",
        "AGENT_LISTENING",
        0.3,
    )
    assert list(error.phases) == ["VMM_STARTED", "INIT_STARTED"]
    assert error.skipped == {"KERNEL_BOOTED": "a container shares the host kernel"}
    assert error.console_tail.splitlines()[0] == "Spawning container remotecli-x on /x/root."
    assert error.unit_state is not None and "ActiveState=active" in error.unit_state
    assert "Not network-online.target" in error.hint  # the seed's suspect is cleared
    assert "Full console: " + str(target.console_path) in error.hint


@pytest.mark.anyio
async def test_an_agent_without_console_output_is_still_found_by_its_health(
    tmp_path: Path, healthy: Path
) -> None:
    target = ScriptedInstance(tmp_path, Deadlines())
    target.say("Spawning container remotecli-x on /x/root.", "systemd 257 running in system mode")

    readiness = await wait_ready(
        target, backend="nspawn", started_at=time.monotonic(), markers=MARKERS, skipped=SKIPPED
    )

    assert Phase.AGENT_READY in readiness.reached


@pytest.mark.anyio
async def test_a_launcher_that_exits_ends_the_wait_at_once(tmp_path: Path) -> None:
    target = ScriptedInstance(tmp_path, Deadlines())
    target.say("Spawning container remotecli-x on /x/root.", "Directory /x/root doesn't look like")
    target.exited = 1

    with pytest.raises(NotReady) as caught:
        await wait_ready(
            target, backend="nspawn", started_at=time.monotonic(), markers=MARKERS,
            skipped=SKIPPED,
        )  # fmt: skip

    # Stopped at the exit, not at a deadline: the error says why it stopped waiting.
    assert "(Stopped waiting: the nspawn process exited with code 1.)" in caught.value.hint
    assert "exited with code 1 before init started" in caught.value.hint
    assert "Directory /x/root doesn't look like" in caught.value.hint
