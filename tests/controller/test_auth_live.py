"""A login's live state owns its lock: writes and the one ending go through its methods."""

from __future__ import annotations

import asyncio
import time

import pytest

from remotecli.controller.auth.session import Live

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def live() -> Live:
    now = time.monotonic()
    return Live("auth_1", "alice", "codex", "paste_code", now, now + 60)


async def test_only_the_first_finish_ends_the_session() -> None:
    session = live()
    assert not session.finished
    assert await session.finish() is True
    assert await session.finish() is False
    assert session.finished


async def test_a_write_is_refused_once_the_session_is_ending() -> None:
    session = live()
    async with session.writing() as in_progress:
        assert in_progress is True
    await session.finish()
    async with session.writing() as in_progress:
        assert in_progress is False


async def test_finish_waits_for_a_write_in_progress() -> None:
    session = live()
    order: list[str] = []
    writing = asyncio.Event()

    async def write() -> None:
        async with session.writing() as in_progress:
            assert in_progress
            writing.set()
            await asyncio.sleep(0)  # the finisher runs meanwhile and must wait
            order.append("written")

    async def end() -> None:
        await writing.wait()
        await session.finish()
        order.append("finished")

    await asyncio.gather(write(), end())
    assert order == ["written", "finished"]
