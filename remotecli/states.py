"""States with checked transitions: one helper for every state enum of the project.

A state enum derives from ``State`` and declares, right beside itself, the
moves its life cycle has with ``transitions(...)``; every change then goes
through ``old.to(new)``, which returns ``new`` or logs and raises the table's
``IllegalTransition`` naming both states::

    class Light(State):
        OFF = "off"
        ON = "on"

    transitions(Light, {Light.OFF: {Light.ON}, Light.ON: {Light.OFF}}, subject="light")

    light = light.to(Light.ON)                  # checked: returns Light.ON
    light = light.to(Light.ON, subject="hall")  # staying put is always allowed

A refused move is a bug (or two writers racing), never a user's mistake: the
error says what tried to move, from where, to where, and where it may go.
Stdlib (and ``errors.py``) only: ``vmm`` and ``controller`` both use it.

Its errors, a subtree of ``errors.py``'s::

    RemoteCliError
    └── IllegalTransition           a state change its table does not have (old, new)
        └── VmStateError            (controller/fleet/states.py) also a VmError: code vm_state
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from remotecli.errors import RemoteCliError

log = logging.getLogger("remotecli.states")


class IllegalTransition(RemoteCliError):
    """A state change the life cycle does not have; ``old`` and ``new`` name both states."""

    code = "illegal_transition"

    def __init__(self, message: str, *, old: str, new: str) -> None:
        super().__init__(message)
        self.old = old
        self.new = new


S = TypeVar("S", bound="State")


class State(enum.StrEnum):
    """The base of every state enum: ``to()`` moves along the enum's ``transitions`` table."""

    # ``new: S`` rather than ``Self``: a state narrowed to one member (after an ``is``
    # check) may still move to another member of its enum; another enum is a TypeError.
    def to(self, new: S, *, subject: str = "") -> S:
        """``new`` if this state may become it (or it is this state), else raise.

        ``subject`` names what moves in the error ("VM vm_1"); default: the table's.
        """
        if type(new) is not type(self):
            raise TypeError(f"{type(self).__name__} cannot become a {type(new).__name__}")
        if new is not self:
            table_of(type(new)).check(self, new, subject)
        return new

    def next(self: S) -> frozenset[S]:
        """The states this one may become (itself aside)."""
        return table_of(type(self)).moves[self]


@dataclass(frozen=True)
class Transitions(Generic[S]):
    """One enum's moves: ``moves[old]`` is every state ``old`` may become."""

    moves: Mapping[S, frozenset[S]]
    #: What moves, for the error ("auth session"); ``to(subject=...)`` overrides it.
    subject: str
    #: Said after the two states (what probably happened, what to do).
    hint: str = ""
    error: type[IllegalTransition] = IllegalTransition

    def allows(self, old: S, new: S) -> bool:
        return new is old or new in self.moves[old]

    def check(self, old: S, new: S, subject: str = "") -> None:
        if self.allows(old, new):
            return
        allowed = ", ".join(sorted(s.value for s in self.moves[old])) or "nothing"
        message = f"{subject or self.subject} cannot go from {old.value} to {new.value}"
        if self.hint:
            message += f"; {self.hint}"
        log.error("%s (from %s it may become: %s)", message, old.value, allowed)
        raise self.error(message, old=old.value, new=new.value)


_TABLES: dict[type[State], Transitions[Any]] = {}


def transitions(
    enum_type: type[S],
    moves: Mapping[S, Collection[S]],
    *,
    subject: str,
    hint: str = "",
    error: type[IllegalTransition] = IllegalTransition,
) -> Transitions[S]:
    """Declare ``enum_type``'s table (once, beside the enum); every member needs a row."""
    missing = [s.value for s in enum_type if s not in moves]
    if missing:
        raise TypeError(f"{enum_type.__name__}'s transitions have no row for {missing}")
    if enum_type in _TABLES:
        raise TypeError(f"{enum_type.__name__} already has its transitions")
    table = Transitions({s: frozenset(moves[s]) for s in enum_type}, subject, hint, error)
    _TABLES[enum_type] = table
    return table


def table_of(enum_type: type[S]) -> Transitions[S]:
    """The table ``transitions`` declared for ``enum_type``."""
    try:
        table: Transitions[S] = _TABLES[enum_type]
    except KeyError:
        raise TypeError(f"{enum_type.__name__} declares no transitions") from None
    return table


def check_transition(old: S, new: S, *, subject: str = "") -> S:
    """``old.to(new)`` as a function (for code that holds both states)."""
    return old.to(new, subject=subject)
