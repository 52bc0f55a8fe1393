"""How a clone of a golden snapshot becomes itself, for every backend that snapshots.

A backend that can snapshot (``base.SnapshotBackend``: qemu, firecracker)
saves a golden VM with ``create_snapshot`` and starts clones with
``restore``. Where snapshots live on disk: ``snapshotdir.py``. What a
restore has in common lives here:

- ``wait_restored``: the readiness contract for a restore. The backend's
  ``start()`` records VMM_STARTED and STATE_RESTORED; this waits for the
  agent's /health, then gives the clone its identity (``POST /identity``:
  its own token, hostname, fresh entropy, the current time) and verifies it
  with a round trip: the new token works and the golden token no longer
  does. Only then is the clone AGENT_READY. A miss raises ``NotReady`` with
  a cause (``restore_agent_silent``, ``identity_refresh_failed``) and a hint,
  like a cold boot's.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from pathlib import Path
from typing import Protocol

from remotecli.agent.wire import IdentityApplied, SetIdentity
from remotecli.errors import NotReady, RemoteCliError, VmError
from remotecli.vmm.agentclient import AgentClient, AgentRequestError
from remotecli.vmm.base import (
    RESTORE_SKIPPED,
    InstanceSpec,
    Phase,
    Readiness,
)
from remotecli.vmm.endpoint import AgentEndpoint
from remotecli.vmm.readiness import HealthProbe, console_tail, probe_health

PROBE_SECONDS = 0.02


class GoldenToken(Protocol):
    """What a restore needs of a snapshot (``base.Snapshot`` or a backend's own record)."""

    @property
    def golden_token(self) -> str: ...


class Restored(Protocol):
    spec: InstanceSpec
    agent_endpoint: AgentEndpoint
    console_path: Path

    def exit_code(self) -> int | None: ...


def hostname_for(instance_id: str) -> str:
    """Each clone's hostname: ``rcli-`` + its instance id, one DNS label."""
    return f"rcli-{instance_id}"[:63].rstrip("-")


async def wait_restored(
    target: Restored,
    *,
    backend: str,
    started_at: float,
    readiness: Readiness,
    snapshot: GoldenToken,
) -> Readiness:
    """After the backend resumed a clone: /health, new identity, round trip → AGENT_READY."""
    readiness.skipped.update(RESTORE_SKIPPED)
    deadline = target.spec.deadlines[Phase.AGENT_READY]
    since = max(readiness.reached.values(), default=0.0)
    endpoint = target.agent_endpoint
    probe = HealthProbe(False, "not tried yet")
    while True:
        probe = await probe_health(endpoint, timeout=1.0)
        if probe.ok:
            break
        code = target.exit_code()
        waited = time.monotonic() - started_at - since
        if code is not None or waited > deadline:
            why = f"the {backend} process exited with code {code}" if code is not None else ""
            raise _not_ready(
                target, backend, readiness, deadline, "restore_agent_silent",
                f"the restored agent did not answer GET /health ({probe.detail}). "
                "A snapshot whose devices no longer match (a changed VMM version, network "
                "device or disk) wakes up deaf: remove the snapshot so it is made again"
                + (f". Stopped waiting: {why}." if why else "."),
            )  # fmt: skip
        await asyncio.sleep(PROBE_SECONDS)
    try:
        await refresh_identity(
            endpoint, golden_token=snapshot.golden_token, token=target.spec.agent_token,
            hostname=hostname_for(target.spec.instance_id),
        )  # fmt: skip
    except RemoteCliError as exc:
        raise _not_ready(
            target, backend, readiness, deadline, "identity_refresh_failed",
            f"the restored agent answered /health but refusing its new identity: {exc.message}. "
            "The clone is destroyed rather than used with the golden token; if this repeats, "
            "the snapshot's golden token does not match golden.json: remove the snapshot.",
        ) from exc  # fmt: skip
    readiness.reached[Phase.AGENT_READY] = time.monotonic() - started_at
    return readiness


async def refresh_identity(
    endpoint: AgentEndpoint, *, golden_token: str, token: str, hostname: str
) -> IdentityApplied:
    """``POST /identity`` with the golden token, then prove the swap with a round trip."""
    async with AgentClient(endpoint, golden_token, timeout=10.0) as golden:
        done = await golden.set_identity(
            SetIdentity(
                token=token, hostname=hostname, time=time.time(),
                entropy=base64.b64encode(os.urandom(64)).decode(),
            )
        )  # fmt: skip
        try:
            await golden.logins()
        except AgentRequestError as exc:
            if exc.status != 401:
                raise
        else:
            raise VmError("the golden token still works after the identity refresh")
    async with AgentClient(endpoint, token, timeout=10.0) as own:
        await own.logins()
    return done


def _not_ready(
    target: Restored,
    backend: str,
    readiness: Readiness,
    deadline: float,
    cause: str,
    hint: str,
) -> NotReady:
    return NotReady(
        instance_id=target.spec.instance_id,
        backend=backend,
        last_phase=readiness.last.value if readiness.last else None,
        waiting_for=Phase.AGENT_READY.value,
        deadline=deadline,
        phases=readiness.durations(),
        skipped={p.value: r for p, r in readiness.skipped.items()},
        console_tail=console_tail(target.console_path),
        unit_state=None,
        hint=hint,
        cause=cause,
    )
