"""``eventually``: wait for a condition with bounded retries, never a fixed sleep.

A check is called until it returns something truthy; an ``AssertionError``
it raises (or one of ``retry_on``) counts as "not yet". When the time is up
the last answer or failure is re-raised with what was waited for, so the
report says what the condition last looked like, not only that it timed
out. Any other exception ends the wait at once (a process that exited while
being waited for is not going to become ready). Anchor: firecracker
``microvm.py`` ``_wait_for_api_socket``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")

#: Between tries: short enough that a waiting test costs little, long enough
#: not to busy-spin two shared cores.
INTERVAL = 0.05


class NotYet(AssertionError):
    """A check that ran out of time: ``last`` is its final answer (or the failure it raised)."""

    def __init__(self, what: str, timeout: float, last: object) -> None:
        super().__init__(f"timed out after {timeout} s waiting for {what}; last: {last!r}")
        self.last = last


class _Tries:
    """The deadline and the verdict both waits share; only how they call and sleep differs."""

    def __init__(self, what: str, timeout: float, retry_on: tuple[type[BaseException], ...]):
        self.what, self.timeout = what, timeout
        self.retry: tuple[type[BaseException], ...] = (AssertionError, *retry_on)
        self.deadline = time.monotonic() + timeout

    def done(self, value: object, failure: BaseException | None) -> bool:
        """True when ``value`` is the answer; raises ``NotYet`` once the time is up."""
        if value:
            return True
        if time.monotonic() > self.deadline:
            last = failure if failure is not None else value
            raise NotYet(self.what, self.timeout, last) from failure
        return False


def eventually(
    what: str,
    check: Callable[[], T | None],
    timeout: float = 20.0,
    *,
    interval: float = INTERVAL,
    retry_on: tuple[type[BaseException], ...] = (),
) -> T:
    """Call ``check`` until it returns something truthy; return that value (``what`` says
    what is waited for, in the failure).

    Raises ``NotYet`` (an ``AssertionError``) from the last failure after ``timeout`` s.
    """
    tries = _Tries(what, timeout, retry_on)
    while True:
        failure: BaseException | None = None
        try:
            value = check()
        except tries.retry as exc:
            failure, value = exc, None
        if tries.done(value, failure) and value is not None:  # done: truthy, so not None
            return value
        time.sleep(interval)


@overload
async def eventually_async(
    what: str,
    check: Callable[[], Awaitable[T | None]],
    timeout: float = ...,
    *,
    interval: float = ...,
    retry_on: tuple[type[BaseException], ...] = ...,
) -> T: ...


@overload
async def eventually_async(
    what: str,
    check: Callable[[], T | None],
    timeout: float = ...,
    *,
    interval: float = ...,
    retry_on: tuple[type[BaseException], ...] = ...,
) -> T: ...


async def eventually_async(
    what: str,
    check: Callable[[], Any],
    timeout: float = 20.0,
    *,
    interval: float = INTERVAL,
    retry_on: tuple[type[BaseException], ...] = (),
) -> Any:
    """``eventually`` on an event loop: ``check`` may be a plain or an async function."""
    tries = _Tries(what, timeout, retry_on)
    while True:
        failure: BaseException | None = None
        try:
            answer = check()
            value = await answer if isinstance(answer, Awaitable) else answer
        except tries.retry as exc:
            failure, value = exc, None
        if tries.done(value, failure):
            return value
        await asyncio.sleep(interval)
