"""The steps of an instance's life that every backend takes the same way.

A backend's instance keeps its own start (spawn, configure, resume) and its
own way of stopping; around them it uses these, so the states, the choice
between a cold boot's readiness and a restore's, and the verification that
nothing is left behind mean the same on nspawn, fake, QEMU and Firecracker:

- ``adopted``: the spec and meta of an instance found without a handle (``reap``);
- ``move``: a state change, checked against ``base.INSTANCE_TRANSITIONS``;
- ``begin_start`` / ``abandon_start``: a second start refused; a half-done
  start destroyed, with the evidence gathered before destroy removes it;
- ``wait_ready``: ``restore.wait_restored`` for a clone, ``readiness.wait_ready``
  for a cold boot, with the state kept (READY, or FAILED on any error);
- ``leftovers`` / ``stopped``: what every destroy checks, and the one ``VmError``
  that lists what is left;
- ``evidence``: the VMM's exit code, its own words and the console tail;
- ``saved_cold_boot``: a golden snapshot is a cold boot to AGENT_READY, saved, destroyed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeVar

from remotecli.errors import NotReady, VmError
from remotecli.vmm import readiness, restore, statedir
from remotecli.vmm.base import Instance, InstanceSpec, InstanceState, Phase, Readiness, UnitState
from remotecli.vmm.endpoint import AgentEndpoint
from remotecli.vmm.vmmproc import VmmProcess

T = TypeVar("T")


class Tracked(Protocol):
    """What the shared steps read and write on an instance (every backend's has it)."""

    spec: InstanceSpec
    state: InstanceState
    readiness: Readiness
    #: ``time.monotonic()`` when the instance's process was spawned.
    started_at: float
    console_path: Path
    agent_endpoint: AgentEndpoint

    def exit_code(self) -> int | None: ...

    def console_tail(self, max_chars: int = 4000) -> str: ...

    async def unit_state(self) -> UnitState | None: ...

    async def destroy(self) -> None: ...


def adopted(state_root: Path, instance_id: str) -> tuple[InstanceSpec, dict[str, Any]]:
    """The spec (no token: it is only destroyed) and the recorded meta of an instance
    found on the host without a handle (after a controller restart)."""
    statedir.check_id(instance_id)
    meta = statedir.StateDir(state_root / instance_id).read_meta()
    image = Path(meta.get("image") or "/")
    return InstanceSpec(image=image, instance_id=instance_id, agent_token=""), meta


def move(instance: Tracked, state: InstanceState) -> None:
    """Change ``instance``'s state along ``INSTANCE_TRANSITIONS`` (``IllegalTransition`` if not)."""
    instance.state = instance.state.to(state, subject=f"instance {instance.spec.instance_id}")


def begin_start(instance: Tracked) -> None:
    """Refuse a second start; the instance counts as FAILED until its process runs."""
    if instance.state is not InstanceState.CREATED:
        raise VmError(f"instance {instance.spec.instance_id} was already started")
    move(instance, InstanceState.FAILED)


async def abandon_start(instance: Tracked, exc: BaseException, evidence: Callable[[], str]) -> str:
    """Destroy a half-started VM (its own leftovers are not the error to report) and return
    the evidence to add to ``exc``: ``evidence()`` for a ``VmError`` other than ``NotReady``
    (which carries its own), else "". Gathered first: destroy removes the console."""
    found = evidence() if isinstance(exc, VmError) and not isinstance(exc, NotReady) else ""
    with contextlib.suppress(VmError):
        await instance.destroy()
    move(instance, InstanceState.FAILED)
    return found


async def wait_ready(
    instance: Tracked,
    *,
    backend: str,
    markers: Mapping[Phase, tuple[str, ...]],
    skipped: Mapping[Phase, str],
    snapshot: restore.GoldenToken | None = None,
) -> Readiness:
    """A clone (``snapshot`` given): /health and its new identity; a cold boot: the console's
    markers, then /health. READY on success; FAILED on any error, which is re-raised."""
    if instance.state is not InstanceState.STARTING:
        raise VmError(f"instance {instance.spec.instance_id} is {instance.state}, not starting")
    try:
        if snapshot is not None:
            await restore.wait_restored(
                instance, backend=backend, started_at=instance.started_at,
                readiness=instance.readiness, snapshot=snapshot,
            )  # fmt: skip
        else:
            await readiness.wait_ready(
                instance, backend=backend, started_at=instance.started_at, markers=markers,
                skipped=skipped, readiness=instance.readiness,
            )  # fmt: skip
    except BaseException:
        move(instance, InstanceState.FAILED)
        raise
    move(instance, InstanceState.READY)
    return instance.readiness


def leftovers(what: str, process: VmmProcess, directory: Path) -> list[str]:
    """What every destroy checks first: the process (``what``: its role) and the state dir."""
    problems = []
    if process.alive():
        problems.append(f"{what} pid {process.pid} still runs")
    if directory.exists():
        problems.append(f"state directory {directory}")
    return problems


def stopped(instance: Tracked, backend: str, problems: list[str]) -> None:
    """The end of every destroy: STOPPED, and a ``VmError`` naming whatever is left."""
    move(instance, InstanceState.STOPPED)
    if problems:
        raise VmError(
            f"destroying {backend} instance {instance.spec.instance_id} left things behind:\n  "
            + "\n  ".join(problems)
        )


def evidence(instance: Tracked, vmm: str, *own: str) -> str:
    """What a failed VMM leaves: its exit code, ``own`` (its log, its stderr; "" for none),
    the console's tail."""
    parts = []
    if (code := instance.exit_code()) is not None:
        parts.append(f"{vmm} exited with code {code}.")
    parts += [text for text in own if text]
    if console := instance.console_tail(1500):
        parts.append(f"Console ({instance.console_path}):\n{console}")
    return "\n".join(parts)


async def saved_cold_boot(
    instance: Instance, save: Callable[[Mapping[str, float]], Awaitable[T]]
) -> T:
    """Start ``instance`` cold, wait for AGENT_READY, ``save(its boot phases)``; always destroy."""
    try:
        await instance.start()
        phases = (await instance.wait_ready()).durations()
        return await save(phases)
    finally:
        await instance.destroy()
