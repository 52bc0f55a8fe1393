"""The test support layer itself: ``eventually`` and the /proc reader say what they claim."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.support import procfs
from tests.support.poll import NotYet, eventually, eventually_async


def test_eventually_returns_the_first_truthy_answer() -> None:
    answers: Iterator[object] = iter([None, 0, [], "ready"])
    assert eventually("the third try", lambda: next(answers), 5, interval=0) == "ready"


def test_eventually_reraises_the_last_failure_with_what_was_awaited() -> None:
    tries: list[int] = []

    def check() -> bool:
        tries.append(len(tries))
        raise AssertionError(f"try {len(tries)}")

    with pytest.raises(NotYet) as caught:
        eventually("a check that never passes", check, 0.2, interval=0.01)
    assert len(tries) > 1
    assert "waiting for a check that never passes" in str(caught.value)
    assert isinstance(caught.value.__cause__, AssertionError)
    assert str(caught.value.__cause__) == f"try {len(tries)}"


def test_eventually_stops_at_once_on_an_error_it_does_not_retry() -> None:
    tries: list[int] = []

    def check() -> bool:
        tries.append(1)
        raise RuntimeError("the process exited")

    with pytest.raises(RuntimeError, match="the process exited"):
        eventually("a dead process", check, 5)
    assert tries == [1]


def test_eventually_retries_the_errors_it_is_told_to() -> None:
    answers: list[object] = [ConnectionError("refused"), ConnectionError("refused"), "up"]

    def check() -> object:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert eventually("a server", check, 5, interval=0, retry_on=(ConnectionError,)) == "up"


@pytest.mark.anyio
async def test_eventually_async_awaits_an_async_check() -> None:
    answers = iter([False, True])

    async def check() -> bool:
        return next(answers)

    assert await eventually_async("the second try", check, 5, interval=0) is True


def test_procfs_tells_a_zombie_from_a_running_child() -> None:
    argv = (sys.executable, "-c", "import sys; sys.stdin.read()")
    child = subprocess.Popen(argv, stdin=subprocess.PIPE)
    assert child.stdin is not None
    try:
        # Read once it ran exec (just after the fork /proc shows the parent's or no argv).
        seen = eventually("the child to exec", lambda: _as_run(child.pid, argv))
        assert seen.ppid == os.getpid()
        assert procfs.alive(child.pid)
        assert child.pid in procfs.descendants(os.getpid())
        assert child.pid in [p.pid for p in procfs.naming("sys.stdin.read()")]
        child.stdin.close()
        zombie = eventually("the child to exit", lambda: (p := procfs.read(child.pid)) and p.zombie)
        assert zombie is True
        assert not procfs.alive(child.pid)  # exited, not yet reaped: a zombie is not running
    finally:
        if not child.stdin.closed:
            child.stdin.close()
        child.wait(10)
    assert procfs.read(child.pid) is None
    assert not procfs.alive(child.pid)


def _as_run(pid: int, argv: tuple[str, ...]) -> procfs.Process | None:
    process = procfs.read(pid)
    return process if process is not None and process.argv == argv else None
