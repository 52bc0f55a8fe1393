"""The health monitor: every ``health_interval_seconds``, ``GET /health`` on every live VM.

A VM whose agent fails ``health_failures_allowed`` checks in a row is
destroyed with the reason and the evidence recorded (``stop_reason``, an
``error`` with each failed check and the console tail); a pool VM is then
replaced by the pool filler, a claimed one is started afresh by its next
claim. One round also destroys an auth VM claimed for longer than any login
may last (``auth_session_seconds`` plus up to a minute): a safety net for a login
flow that died without destroying its VM. (Idle CLI VMs are stopped by the
prompt service, which knows when a run is using one.)

Passing checks cost one UPDATE per round for all VMs together; a failure is
written at once (the API shows it while the VM still runs).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

from remotecli.controller.db.models import utcnow
from remotecli.controller.fleet.lifecycle import VmHandle
from remotecli.controller.fleet.states import VmRole, VmState
from remotecli.controller.fleet.store import VmStore
from remotecli.controller.settings import Settings
from remotecli.vmm.readiness import HealthProbe, probe_health

log = logging.getLogger("remotecli.controller.fleet.monitor")

#: The failed checks kept as evidence on the destroyed VM's row.
KEPT_CHECKS = 5
#: An auth VM may stay claimed this long past the login deadline (at most as long
#: again as the deadline itself) before it is reaped.
AUTH_GRACE_SECONDS = 60.0


class Destroyer(Protocol):
    """Destroys a VM in the background (``VmManager.destroy_soon``)."""

    def destroy_soon(
        self, handle: VmHandle, reason: str, *, error: dict[str, Any] | None = None,
        cause: str | None = None,
    ) -> asyncio.Task[None]: ...  # fmt: skip


class Watched(Destroyer, Protocol):
    """What the monitor needs from the fleet (``VmManager``)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def store(self) -> VmStore: ...

    def handles(self) -> list[VmHandle]: ...


class HealthMonitor:
    def __init__(self, manager: Watched) -> None:
        self.manager = manager
        settings = manager.settings
        self.interval = settings.health_interval_seconds
        self.allowed = max(1, settings.health_failures_allowed)
        #: One probe must not outlast the round it belongs to.
        self.probe_timeout = max(0.2, min(5.0, self.interval))
        self._failed_checks: dict[str, list[str]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="vm-health")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check_once()
                await self.stop_unused()
            except Exception:  # the monitor must outlive a DB hiccup; the next round retries
                log.exception("a health round failed; retrying in %.1f s", self.interval)

    async def check_once(self) -> None:
        handles = self.manager.handles()
        probes = await asyncio.gather(
            *(probe_health(h.instance.agent_endpoint, self.probe_timeout) for h in handles)
        )
        passed = []
        for handle, probe in zip(handles, probes, strict=True):
            handle.health.last_checked_at = utcnow()
            if probe.ok and (code := handle.instance.exit_code()) is not None:
                self._vmm_exited(handle, code)
                continue
            if probe.ok:
                handle.health.failures = 0
                handle.health.last_ok_at = handle.health.last_checked_at
                handle.health.last_error = None
                self._failed_checks.pop(handle.vm_id, None)
                passed.append(handle.vm_id)
            elif handle.state in (VmState.READY, VmState.CLAIMED):  # not destroyed meanwhile
                await self._failed(handle, probe)
        await self.manager.store.health_passed(passed)

    async def _failed(self, handle: VmHandle, probe: HealthProbe) -> None:
        health = handle.health
        health.failures += 1
        health.last_error = probe.detail
        checks = self._failed_checks.setdefault(handle.vm_id, [])
        checks.append(f"{health.last_checked_at:%H:%M:%S} {probe.detail}")
        del checks[:-KEPT_CHECKS]
        await self.manager.store.update(
            handle.vm_id, health_failures=health.failures, health_error=probe.detail,
            last_health_at=health.last_checked_at,
        )  # fmt: skip
        if health.failures < self.allowed:
            log.warning(
                "VM %s failed a health check (%d of %d allowed): %s",
                handle.vm_id, health.failures, self.allowed, probe.detail,
            )  # fmt: skip
            return
        then = "a new one replaces it in the pool" if handle.state is VmState.READY else (
            "its next claim starts a new VM"
        )  # fmt: skip
        message = (
            f"the agent failed {health.failures} health checks in a row (every "
            f"{self.interval:g} s); the VM was destroyed and {then}. Last: {probe.detail}"
        )
        error = {
            "code": "vm_unhealthy", "message": message,
            "checks": list(checks), "hint": "the console tail shows the agent's last words",
        }  # fmt: skip
        log.error("VM %s is unhealthy: %s", handle.vm_id, message)
        self._failed_checks.pop(handle.vm_id, None)
        self.manager.destroy_soon(
            handle, f"unhealthy: {health.failures} failed health checks in a row ({probe.detail})",
            error=error, cause="unhealthy",
        )  # fmt: skip

    def _vmm_exited(self, handle: VmHandle, code: int) -> None:
        """The VMM process is gone but the guest still answers (nspawn: a killed
        systemd-nspawn leaves the container running, with no console and no supervisor)."""
        if handle.state not in (VmState.READY, VmState.CLAIMED):
            return  # destroyed meanwhile
        self._failed_checks.pop(handle.vm_id, None)
        destroy_vmm_exited(self.manager, handle, code)

    async def stop_unused(self) -> None:
        settings = self.manager.settings
        now = time.monotonic()
        for handle in self.manager.handles():
            if handle.role is not VmRole.AUTH or handle.state is not VmState.CLAIMED:
                continue
            held = now - (handle.claimed_at or now)
            limit = settings.auth_session_seconds
            if held > limit + min(limit, AUTH_GRACE_SECONDS):
                self.manager.destroy_soon(
                    handle, f"auth VM still claimed after {held:.0f} s, longer than any "
                    "login may last (REMOTECLI_AUTH_SESSION_SECONDS): its login was lost",
                )  # fmt: skip


def destroy_vmm_exited(manager: Destroyer, handle: VmHandle, code: int) -> asyncio.Task[None]:
    """Destroy a VM whose VMM process exited (code ``code``): FAILED, cause ``vmm_exited``.

    Its agent may still answer (an nspawn guest outlives a killed nspawn) or not
    (a fake agent, a QEMU guest); either way nothing supervises it any more.
    """
    then = "a new one replaces it in the pool" if handle.state is VmState.READY else (
        "its next claim starts a new VM"
    )  # fmt: skip
    message = f"the VM's process exited (code {code}), so the VM was destroyed and {then}"
    log.error("VM %s lost its VMM process: %s", handle.vm_id, message)
    return manager.destroy_soon(
        handle, f"VMM process exited (code {code})",
        error={"code": "vmm_exited", "message": message,
               "hint": "the console tail shows the VMM's last words"},
        cause="vmm_exited",
    )  # fmt: skip
