"""The checked-transition helper, and every state enum's table (``remotecli/states.py``)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

from remotecli.controller.auth.states import AUTH_TRANSITIONS, AuthPhase
from remotecli.controller.fleet.golden import GOLDEN_TRANSITIONS, GoldenState
from remotecli.controller.fleet.states import VM_TRANSITIONS, VmState, VmStateError
from remotecli.controller.prompts.states import RUN_TRANSITIONS, RunStatus
from remotecli.controller.vault.states import CREDENTIAL_TRANSITIONS, CredentialState
from remotecli.errors import RemoteCliError, VmError
from remotecli.states import (
    IllegalTransition,
    State,
    Transitions,
    check_transition,
    table_of,
    transitions,
)
from remotecli.vmm.base import INSTANCE_TRANSITIONS, InstanceState


class Door(State):
    OPEN = "open"
    SHUT = "shut"
    LOCKED = "locked"


def refused(move: Callable[[], object]) -> str:
    """The message of the ``IllegalTransition`` that ``move()`` raises."""
    with pytest.raises(IllegalTransition) as caught:
        move()
    return caught.value.message


DOOR = transitions(
    Door,
    {Door.OPEN: {Door.SHUT}, Door.SHUT: {Door.OPEN, Door.LOCKED}, Door.LOCKED: {Door.SHUT}},
    subject="door",
    hint="check who holds the key",
)


def test_a_legal_move_returns_the_new_state() -> None:
    assert Door.OPEN.to(Door.SHUT) is Door.SHUT
    assert check_transition(Door.SHUT, Door.LOCKED) is Door.LOCKED


def test_staying_put_is_always_allowed() -> None:
    assert Door.LOCKED.to(Door.LOCKED) is Door.LOCKED


def test_an_illegal_move_raises_naming_both_states(caplog: pytest.LogCaptureFixture) -> None:
    with (
        caplog.at_level(logging.ERROR, logger="remotecli.states"),
        pytest.raises(IllegalTransition) as caught,
    ):
        Door.OPEN.to(Door.LOCKED, subject="the front door")
    error = caught.value
    assert isinstance(error, RemoteCliError)
    assert error.code == "illegal_transition"
    assert (error.old, error.new) == ("open", "locked")
    assert error.message == (
        "the front door cannot go from open to locked; check who holds the key"
    )
    assert [r.getMessage() for r in caplog.records] == [
        "the front door cannot go from open to locked; check who holds the key "
        "(from open it may become: shut)"
    ]


def test_the_subject_defaults_to_the_tables() -> None:
    message = refused(lambda: check_transition(Door.LOCKED, Door.OPEN))
    assert message == "door cannot go from locked to open; check who holds the key"


def test_another_enums_member_is_refused() -> None:
    with pytest.raises(TypeError, match="Door cannot become a RunStatus"):
        Door.OPEN.to(RunStatus.RUNNING)


def test_next_lists_the_reachable_states() -> None:
    assert Door.SHUT.next() == frozenset({Door.OPEN, Door.LOCKED})
    assert table_of(Door) is DOOR
    assert DOOR.allows(Door.SHUT, Door.OPEN) and not DOOR.allows(Door.OPEN, Door.LOCKED)


def test_a_table_must_cover_every_member_and_be_declared_once() -> None:
    class Half(State):
        A = "a"
        B = "b"

    with pytest.raises(TypeError, match=r"Half's transitions have no row for \['b'\]"):
        transitions(Half, {Half.A: {Half.B}}, subject="half")
    transitions(Half, {Half.A: {Half.B}, Half.B: set()}, subject="half")
    with pytest.raises(TypeError, match="Half already has its transitions"):
        transitions(Half, {Half.A: set(), Half.B: set()}, subject="half")


def test_an_enum_without_a_table_cannot_move() -> None:
    class Loose(State):
        A = "a"
        B = "b"

    with pytest.raises(TypeError, match="Loose declares no transitions"):
        Loose.A.to(Loose.B)


# -- every state enum of the project -------------------------------------------------------

TABLES: list[tuple[type[State], Transitions[Any]]] = [
    (InstanceState, INSTANCE_TRANSITIONS),
    (VmState, VM_TRANSITIONS),
    (AuthPhase, AUTH_TRANSITIONS),
    (RunStatus, RUN_TRANSITIONS),
    (CredentialState, CREDENTIAL_TRANSITIONS),
    (GoldenState, GOLDEN_TRANSITIONS),
]


@pytest.mark.parametrize(("enum_type", "table"), TABLES, ids=lambda t: getattr(t, "__name__", ""))
def test_each_table_covers_every_member(enum_type: type[State], table: Transitions[Any]) -> None:
    assert table_of(enum_type) is table
    assert set(table.moves) == set(enum_type)
    for old, targets in table.moves.items():
        assert targets <= set(enum_type), old
        assert old not in targets, f"{old} lists itself (staying put is always allowed)"


def test_the_instance_table() -> None:
    s = InstanceState
    # begin_start (FAILED until the process runs), a half-done start destroyed then FAILED.
    assert s.CREATED.to(s.FAILED).to(s.STARTING).to(s.READY).to(s.STOPPED) is s.STOPPED
    assert s.FAILED.to(s.STOPPED).to(s.FAILED) is s.FAILED
    assert refused(lambda: s.STOPPED.to(s.READY)) == "instance cannot go from stopped to ready"


def test_the_vm_table_keeps_its_error_and_message() -> None:
    assert VmState.READY.to(VmState.CLAIMED).to(VmState.READY) is VmState.READY
    with pytest.raises(VmStateError) as caught:
        VmState.STOPPED.to(VmState.READY, subject="VM vm_1")
    assert isinstance(caught.value, VmError) and caught.value.code == "vm_state"
    assert caught.value.message == (
        "VM vm_1 cannot go from stopped to ready; it was probably changed by someone else at "
        "the same time (reload it and try again)"
    )


def test_the_auth_table() -> None:
    p = AuthPhase
    assert p.CLAIMING_VM.to(p.STARTING_LOGIN).to(p.AWAITING_USER).to(p.VERIFYING) is p.VERIFYING
    assert p.VERIFYING.to(p.AWAITING_USER).to(p.CAPTURING).to(p.AUTHENTICATED).ended
    message = refused(lambda: p.FAILED.to(p.CAPTURING))
    assert message == "auth session cannot go from failed to capturing"


def test_the_run_table() -> None:
    assert RunStatus.RUNNING.to(RunStatus.CANCELLED) is RunStatus.CANCELLED
    assert (
        refused(lambda: RunStatus.SUCCEEDED.to(RunStatus.FAILED))
        == "prompt run cannot go from succeeded to failed"
    )


def test_the_credential_table() -> None:
    c = CredentialState
    assert c.CONNECTED.to(c.EXPIRED).to(c.CONNECTED).to(c.NEEDS_LOGIN) is c.NEEDS_LOGIN
    message = refused(lambda: c.NEEDS_LOGIN.to(c.CONNECTED))
    assert message == "credential cannot go from needs_login to connected"


def test_the_golden_table() -> None:
    g = GoldenState
    assert g.PENDING.to(g.MAKING).to(g.READY).to(g.MAKING).to(g.FAILED).to(g.MAKING) is g.MAKING
    message = refused(lambda: g.DISABLED.to(g.MAKING))
    assert message == "golden snapshot cannot go from disabled to making"
