"""The warm pool: keep ``warm_pool_<role>`` READY VMs per role, so a claim takes milliseconds.

One background task compares each role's target with the VMs ready or
starting and starts the missing ones (at most ``PARALLEL`` at a time per
role: a burst of claims must not boot twenty VMs at once on a small host).
It wakes when a VM is claimed or destroyed, and otherwise re-checks every
``RECHECK_SECONDS``.

A failed warm start is recorded like any start (the VM row says FAILED with
the evidence) and retried after an exponential backoff (1 s, 2 s, 4 s, ...
up to a minute): a broken image never becomes a hot loop of boots.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Any, Protocol

from remotecli.controller.fleet.states import VmRole
from remotecli.errors import NotReady, RemoteCliError

log = logging.getLogger("remotecli.controller.fleet.pool")

#: Warm starts in flight per role.
PARALLEL = 2
#: A safety net: the filler normally wakes on claims and destroys.
RECHECK_SECONDS = 5.0


class Pool(Protocol):
    """What the filler needs from the fleet (``VmManager``): the pool's size, a warm start."""

    def pool_size(self, role: VmRole) -> int: ...

    async def launch_for_pool(self, role: VmRole) -> object: ...


class PoolFiller:
    def __init__(
        self,
        manager: Pool,
        targets: Mapping[VmRole, int],
        *,
        backoff: tuple[float, float] = (1.0, 60.0),
    ) -> None:
        self.manager = manager
        self.targets = {role: max(0, n) for role, n in targets.items()}
        self.backoff_base, self.backoff_max = backoff
        self.starting = dict.fromkeys(VmRole, 0)
        self.failures = dict.fromkeys(VmRole, 0)
        self.not_before = dict.fromkeys(VmRole, 0.0)
        self.last_error: dict[VmRole, dict[str, Any] | None] = dict.fromkeys(VmRole)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._starts: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        if any(self.targets.values()):
            self._task = asyncio.get_running_loop().create_task(self._run(), name="vm-pool")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._starts) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None

    def wake(self) -> None:
        self._wake.set()

    def status(self) -> dict[str, Any]:
        """What the API shows: per role, the target, what is ready and starting, the backoff."""
        now = time.monotonic()
        return {
            role.value: {
                "target": self.targets.get(role, 0),
                "ready": self.manager.pool_size(role),
                "starting": self.starting[role],
                "consecutiveFailures": self.failures[role],
                "retryInSeconds": round(max(0.0, self.not_before[role] - now), 1),
                "lastError": self.last_error[role],
            }
            for role in VmRole
        }

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            next_check = time.monotonic() + RECHECK_SECONDS
            for role, target in self.targets.items():
                missing = target - self.manager.pool_size(role) - self.starting[role]
                allowed = min(missing, PARALLEL - self.starting[role])
                if allowed <= 0:
                    continue
                if time.monotonic() < self.not_before[role]:
                    next_check = min(next_check, self.not_before[role])
                    continue
                for _ in range(allowed):
                    self.starting[role] += 1
                    task = asyncio.get_running_loop().create_task(
                        self._fill_one(role), name=f"vm-pool-{role.value}"
                    )
                    self._starts.add(task)
                    task.add_done_callback(self._starts.discard)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.01, next_check - time.monotonic()))

    async def _fill_one(self, role: VmRole) -> None:
        try:
            await self.manager.launch_for_pool(role)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # recorded on the VM row; here: back off and say so
            self.failures[role] += 1
            delay = min(self.backoff_max, self.backoff_base * 2 ** (self.failures[role] - 1))
            self.not_before[role] = time.monotonic() + delay
            error = exc.to_dict() if isinstance(exc, RemoteCliError) else {"message": str(exc)}
            self.last_error[role] = {
                "code": error.get("code", "error"), "message": error["message"],
                **({"cause": exc.cause} if isinstance(exc, NotReady) else {}),
            }  # fmt: skip
            log.warning(
                "a warm %s VM failed to start (%d in a row); next try in %.0f s: %s",
                role.value, self.failures[role], delay, error["message"],
            )  # fmt: skip
        else:
            self.failures[role] = 0
            self.last_error[role] = None
        finally:
            self.starting[role] -= 1
            self._wake.set()
