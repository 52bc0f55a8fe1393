"""A VM's role and state, and the moves its life cycle has.

Every change of a VM's state (its row through ``VmStore.update``, its
handle in the manager) goes through ``VmState.to``, checked against
``VM_TRANSITIONS``; a STOPPED VM never becomes READY again::

    STARTING ─▶ READY ◀─▶ CLAIMED ─▶ STOPPING ─▶ STOPPED
        │         │          │           │
        └─────────┴──────────┴───────────┴──▶ FAILED  (with the error as JSON)

CLAIMED ─▶ READY happens to a handle only: a pool claim undone before it was
recorded (the claimer left during the health probe, or the VM answered dead
and goes away without running the hooks).

A refused move raises, in the tree drawn in ``remotecli/errors.py``::

    IllegalTransition               (states.py)
    └── VmStateError                a VM's; also a VmError (code vm_state)
"""

from __future__ import annotations

import enum

from remotecli.errors import VmError
from remotecli.states import IllegalTransition, State, transitions


class VmRole(enum.StrEnum):
    AUTH = "auth"  # one login, then destroyed
    CLI = "cli"  # a user's CLI VM: holds credentials, runs prompts


class VmState(State):
    STARTING = "starting"
    READY = "ready"  # in the warm pool, unclaimed
    CLAIMED = "claimed"  # serving a login or a user
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


class VmStateError(IllegalTransition, VmError):
    """A state change the life cycle does not allow (a bug, or two writers racing)."""

    code = "vm_state"


_ENDED = {VmState.STOPPED, VmState.FAILED}
VM_TRANSITIONS = transitions(
    VmState,
    {
        VmState.STARTING: {VmState.READY, VmState.CLAIMED, VmState.STOPPING, *_ENDED},
        VmState.READY: {VmState.CLAIMED, VmState.STOPPING, *_ENDED},
        VmState.CLAIMED: {VmState.READY, VmState.STOPPING, *_ENDED},
        VmState.STOPPING: _ENDED,
        VmState.STOPPED: set(),
        VmState.FAILED: set(),
    },
    subject="VM",
    hint="it was probably changed by someone else at the same time (reload it and try again)",
    error=VmStateError,
)
