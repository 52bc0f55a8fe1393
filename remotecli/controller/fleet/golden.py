"""The controller's golden snapshot: made in the background, used by claims, dropped when bad.

When the backend can snapshot (``Backend.supports_snapshots``) and
``REMOTECLI_SNAPSHOTS`` is on, the VM manager starts this at start-up:

- ``prepare()`` (a background task) finds or makes the snapshot for this
  backend + image + agent environment + machine size in
  ``<state_dir>/snapshots`` (``vmm/restore.py``'s store: made once, under a
  lock, atomically). Claims cold-start until it is ready; ``status()`` says
  what is happening (the API and the claim traces show it). The warm pool
  waits for it (``settled()``) instead of cold-booting beside it: on a
  small host two boots at once only slow both.
- ``current`` is the snapshot claims restore from, or None with ``reason``.
- ``restore_failed()`` counts consecutive failed restores; at
  ``MAX_RESTORE_FAILURES`` the snapshot is removed and made again (a VMM
  upgrade or a changed device makes old snapshots wake up deaf).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import secrets
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from remotecli.errors import RemoteCliError
from remotecli.states import State, transitions
from remotecli.vmm.base import Backend, Deadlines, InstanceSpec, Snapshot, SnapshotBackend
from remotecli.vmm.snapshotdir import SnapshotStore

log = logging.getLogger(__name__)

MAX_RESTORE_FAILURES = 3


class GoldenState(State):
    DISABLED = "disabled"  # the backend has no snapshots, or they are off
    PENDING = "pending"  # not begun yet (``start()`` begins it)
    MAKING = "making"  # found or being made (``prepare()``)
    READY = "ready"  # claims restore from ``current``
    FAILED = "failed"  # could not be made: claims cold-start (``error`` says why)


#: ``prepare()`` goes PENDING → MAKING → READY or FAILED; a READY snapshot whose
#: restores keep failing is made again (→ MAKING), and so is a FAILED one when the
#: snapshot is started again (``start()`` after ``stop()``).
GOLDEN_TRANSITIONS = transitions(
    GoldenState,
    {
        GoldenState.DISABLED: set(),
        GoldenState.PENDING: {GoldenState.MAKING},
        GoldenState.MAKING: {GoldenState.READY, GoldenState.FAILED},
        GoldenState.READY: {GoldenState.MAKING},
        GoldenState.FAILED: {GoldenState.MAKING},
    },
    subject="golden snapshot",
)


def snapshot_name(
    backend: str, image: Path, agent_env: Mapping[str, str], spec: InstanceSpec
) -> str:
    """One snapshot per backend, image and everything baked into the golden VM's memory."""
    inputs = {
        "image": str(image.resolve()),
        "env": dict(sorted(agent_env.items())),
        "memory": spec.memory_mib,
        "vcpus": spec.vcpus,
    }
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]
    return f"{backend}-{digest}"


class GoldenSnapshot:
    def __init__(
        self,
        backend: Backend,
        store_root: Path,
        image: Path,
        agent_env: Mapping[str, str],
        deadlines: Deadlines,
        *,
        enabled: bool = True,
    ) -> None:
        self.backend = backend
        self.store = SnapshotStore(store_root)
        self.image = image
        self.agent_env = dict(agent_env)
        self.deadlines = deadlines
        self.enabled = enabled and backend.supports_snapshots
        self.current: Snapshot | None = None
        self.state = GoldenState.PENDING if self.enabled else GoldenState.DISABLED
        self.error: str | None = None
        self.made_seconds: float | None = None
        self.failures = 0
        self._task: asyncio.Task[None] | None = None
        self._settled = asyncio.Event()
        if not self.enabled:
            self._settled.set()

    @property
    def reason(self) -> str:
        """Why claims do not restore right now (for the claim trace)."""
        if not self.backend.supports_snapshots:
            return f"the {self.backend.name} backend has no snapshots"
        if not self.enabled:
            return "snapshots are off (REMOTECLI_SNAPSHOTS=0)"
        if self.state is GoldenState.FAILED:
            return f"the golden snapshot could not be made: {self.error}"
        return "the golden snapshot is still being made"

    def start(self) -> None:
        if self.enabled and self._task is None:
            self._task = asyncio.create_task(self.prepare(), name="golden-snapshot")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def settled(self) -> None:
        """Return once the snapshot is ready or could not be made (at once when disabled)."""
        await self._settled.wait()

    async def prepare(self) -> None:
        self._settled.clear()
        try:
            await self._prepare()
        finally:
            self._settled.set()

    async def _prepare(self) -> None:
        spec = InstanceSpec(
            image=self.image, instance_id=f"golden-{secrets.token_hex(4)}",
            agent_token=secrets.token_urlsafe(32), role="golden",
            agent_env=self.agent_env, deadlines=self.deadlines,
        )  # fmt: skip
        name = snapshot_name(self.backend.name, self.image, self.agent_env, spec)
        backend = cast(SnapshotBackend, self.backend)
        self.state = self.state.to(GoldenState.MAKING)
        started = time.monotonic()
        try:
            snapshot, made = await self.store.ensure(
                name, lambda directory: backend.create_snapshot(spec, directory)
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.state = self.state.to(GoldenState.FAILED)
            self.error = exc.message if isinstance(exc, RemoteCliError) else repr(exc)
            log.warning("golden snapshot failed; claims cold-start: %s", self.error)
            return
        self.made_seconds = round(time.monotonic() - started, 3)
        self.state = self.state.to(GoldenState.READY)
        self.current, self.error, self.failures = snapshot, None, 0
        log.info(
            "golden snapshot %s", "made" if made else "found",
            extra={"snapshot": name, "seconds": self.made_seconds},
        )  # fmt: skip

    def restore_failed(self, why: str) -> None:
        self.failures += 1
        if self.failures < MAX_RESTORE_FAILURES or self.current is None:
            return
        log.warning(
            "%d restores failed in a row (%s): making the snapshot again", self.failures, why
        )
        self.store.remove(self.current.directory.name)
        self.current, self.failures = None, 0
        self._task = asyncio.create_task(self.prepare(), name="golden-snapshot")

    def restore_worked(self) -> None:
        self.failures = 0

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state.value}
        if self.current is not None:
            out["name"] = self.current.directory.name
            out["bootPhases"] = dict(self.current.boot_phases)
        if self.made_seconds is not None:
            out["preparedSeconds"] = self.made_seconds
        if self.state is not GoldenState.READY:
            out["reason"] = self.reason
        return out
