"""Prometheus metrics of one controller: VM readiness and starts, failures, pool, logins, runs.

Each app gets its own ``CollectorRegistry`` (tests build many apps in one
process; the global registry would refuse the second app's metrics). The
``Metrics`` object is ``context.metrics``; services record
through its methods, never through prometheus_client directly, so names and
labels stay in this one file::

    metrics = context.metrics
    metrics.login_finished("codex", "authenticated", 42.0)
    metrics.run_finished("claude_code", "succeeded", 12.5)

Gauges that describe the current state (VMs by role and state, the pool) are
filled at scrape time by callbacks (``on_scrape``), so they never drift from
what the VM manager holds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

log = logging.getLogger("remotecli.controller.metrics")

#: Readiness phases take milliseconds (fake, nspawn) to tens of seconds (a VM under emulation).
PHASE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: A claim from the warm pool is milliseconds; a cold boot up to a minute.
START_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0)
#: A login waits for a human: seconds to the auth session's 15-minute deadline.
LOGIN_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0)
#: A prompt run: a quick answer to a long agentic session.
RUN_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.readiness_phase = Histogram(
            "remotecli_vm_readiness_phase_seconds",
            "Seconds spent in each readiness phase of a VM start (from the previous phase)",
            ["backend", "phase"], buckets=PHASE_BUCKETS, registry=r,
        )  # fmt: skip
        self.vm_start = Histogram(
            "remotecli_vm_start_seconds",
            "Seconds from a claim to a ready VM, by where it came from (pool, restore, cold)",
            ["origin"], buckets=START_BUCKETS, registry=r,
        )  # fmt: skip
        self.vm_failures = Counter(
            "remotecli_vm_failures",
            "VMs that failed, by cause (NotReady's diagnosis, unhealthy, teardown, ...)",
            ["cause"], registry=r,
        )  # fmt: skip
        self.vms = Gauge(
            "remotecli_vms", "VMs this controller holds, by role and state",
            ["role", "state"], registry=r,
        )  # fmt: skip
        self.pool_ready = Gauge(
            "remotecli_pool_ready", "Ready, unclaimed VMs in the warm pool", ["role"], registry=r
        )
        self.pool_target = Gauge(
            "remotecli_pool_target", "The warm pool's configured size", ["role"], registry=r
        )
        self.login_seconds = Histogram(
            "remotecli_login_seconds",
            "Seconds from POST /api/auth/start to the session's end, by provider and final phase",
            ["provider", "phase"], buckets=LOGIN_BUCKETS, registry=r,
        )  # fmt: skip
        self.run_seconds = Histogram(
            "remotecli_prompt_run_seconds",
            "Seconds of a prompt run, by provider and final status",
            ["provider", "status"], buckets=RUN_BUCKETS, registry=r,
        )  # fmt: skip
        self._on_scrape: list[Callable[[Metrics], None]] = []

    # -- what services record ----------------------------------------------------

    def vm_ready(self, backend: str, phase_seconds: Mapping[str, float]) -> None:
        """A VM reached AGENT_READY: one observation per phase it went through."""
        for phase, seconds in phase_seconds.items():
            self.readiness_phase.labels(backend, phase).observe(seconds)

    def vm_claimed(self, origin: str, seconds: float) -> None:
        self.vm_start.labels(origin).observe(seconds)

    def vm_failed(self, cause: str) -> None:
        self.vm_failures.labels(cause).inc()

    def login_finished(self, provider: str, phase: str, seconds: float) -> None:
        """An auth session ended (``phase``: authenticated, failed, cancelled, expired)."""
        self.login_seconds.labels(provider, phase).observe(seconds)

    def run_finished(self, provider: str, status: str, seconds: float) -> None:
        """A prompt run ended (``status``: succeeded, failed, cancelled)."""
        self.run_seconds.labels(provider, status).observe(seconds)

    # -- scraping ---------------------------------------------------------------------

    def on_scrape(self, callback: Callable[[Metrics], None]) -> None:
        """Run ``callback`` before every scrape (to set gauges from live state)."""
        self._on_scrape.append(callback)

    def remove_on_scrape(self, callback: Callable[[Metrics], None]) -> None:
        if callback in self._on_scrape:
            self._on_scrape.remove(callback)

    def render(self) -> bytes:
        for callback in list(self._on_scrape):
            try:
                callback(self)
            except Exception:  # a broken gauge must not take the other metrics down
                log.exception("a metrics callback failed; its gauges may be stale")
        return generate_latest(self.registry)
