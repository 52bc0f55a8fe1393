"""Golden snapshots, shared by every VM backend: where they live and how a clone becomes itself.

A backend that can snapshot (``base.SnapshotBackend``: qemu, firecracker)
saves a golden VM with ``create_snapshot`` and starts clones with
``restore``. What is common lives here:

- ``SnapshotStore``: snapshots on disk under ``<cache>/snapshots/<name>``,
  made once under a lock, in a temp directory renamed into place (readers see
  none or a whole one), each with ``golden.json`` (0600: the golden token).
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
import contextlib
import fcntl
import json
import os
import secrets
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, replace
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
    Snapshot,
)
from remotecli.vmm.endpoint import AgentEndpoint
from remotecli.vmm.readiness import HealthProbe, console_tail, probe_health

#: The store's record of a snapshot; the backend keeps its own files beside it.
META = "golden.json"
TMP_PREFIX = ".tmp-"
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


def write_meta(snapshot: Snapshot) -> None:
    data = asdict(snapshot)
    data["directory"] = str(snapshot.directory)
    data["image"] = str(snapshot.image)
    path = snapshot.directory / META
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2, default=str)


def load(directory: Path) -> Snapshot:
    try:
        data = json.loads((directory / META).read_text())
    except (OSError, ValueError) as exc:
        raise VmError(
            f"{directory} is not a usable snapshot ({exc}); remove it and it will be made again"
        ) from exc
    return Snapshot(
        backend=str(data["backend"]),
        directory=directory,
        image=Path(data["image"]),
        golden_token=str(data["golden_token"]),
        boot_phases=dict(data.get("boot_phases") or {}),
        meta=dict(data.get("meta") or {}),
    )


class SnapshotStore:
    """Golden snapshots under ``root``, one directory per name (backend + inputs key)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, name: str) -> Path:
        if not name or "/" in name or name.startswith("."):
            raise VmError(f"bad snapshot name {name!r}")
        return self.root / name

    def find(self, name: str) -> Snapshot | None:
        directory = self.path(name)
        return load(directory) if (directory / META).is_file() else None

    async def ensure(
        self, name: str, make: Callable[[Path], Awaitable[Snapshot]]
    ) -> tuple[Snapshot, bool]:
        """The snapshot called ``name``, made with ``make(temp_dir)`` if missing.

        Returns ``(snapshot, made)``. ``make`` must leave the snapshot's files
        in the directory it is given; it is renamed into place afterwards.
        """
        found = self.find(name)
        if found is not None:
            return found, False
        async with self._lock():
            found = self.find(name)
            if found is not None:
                return found, False
            for stale in self.root.glob(f"{TMP_PREFIX}*"):
                shutil.rmtree(stale, ignore_errors=True)  # a maker killed outright
            tmp = self.root / f"{TMP_PREFIX}{name}-{secrets.token_hex(4)}"
            tmp.mkdir(mode=0o700)
            try:
                made = replace(await make(tmp), directory=tmp)
                write_meta(made)  # load() takes the directory from where the file is
                final = self.path(name)
                tmp.rename(final)
                made = replace(made, directory=final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            return made, True

    def remove(self, name: str) -> None:
        shutil.rmtree(self.path(name), ignore_errors=True)

    @contextlib.asynccontextmanager
    async def _lock(self) -> AsyncIterator[None]:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    await asyncio.sleep(0.1)
            yield
        finally:
            os.close(fd)


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
