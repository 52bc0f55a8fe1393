"""A prompt run's status and its moves: RUNNING until it ends, once, as one of the others."""

from __future__ import annotations

from remotecli.states import State, transitions


class RunStatus(State):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


RUN_TRANSITIONS = transitions(
    RunStatus,
    {
        RunStatus.RUNNING: {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED},
        RunStatus.SUCCEEDED: set(),
        RunStatus.FAILED: set(),
        RunStatus.CANCELLED: set(),
    },
    subject="prompt run",
)
