"""The one exception tree: every RemoteCliError is drawn where it lives, and has an HTTP status.

The drawing in ``remotecli/errors.py``'s docstring (and the subtrees drawn in
their own modules, e.g. ``controller/errors.py``) must name every subclass
of ``RemoteCliError`` under its real parent, with the module it lives in;
the API answers each with the status ``controller/api/status.py`` maps its
type to, and no class carries a status of its own beside that table.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import sys
from pathlib import Path

import pytest

import remotecli
from remotecli import errors
from remotecli.controller.api.status import status_for
from remotecli.controller.auth.checks import relay_error, start_failed
from remotecli.controller.db.models import AuthSession
from remotecli.controller.errors import (
    BadGateway,
    BadRequest,
    Conflict,
    PayloadTooLarge,
    Unavailable,
    Unprocessable,
)
from remotecli.controller.settings import UnsafeSettings
from remotecli.errors import RemoteCliError
from remotecli.providers.base import ProviderError
from remotecli.states import IllegalTransition
from remotecli.vmm.agentclient import AgentRequestError, AgentUnreachable
from remotecli.vmm.endpoint import HandshakeError

PACKAGE = Path(remotecli.__file__).parent
#: Run inside the VM (stdlib only, their own trees) or only in tests: not the host's tree.
OUTSIDE = ("remotecli.agent", "remotecli.testbed")
#: One line of a drawn tree: ``│   ├── Name   (path/to/module.py) words``.
BRANCH = re.compile(
    r"^(?P<rails>(?:│   |    )*)[├└]── (?P<name>\w+)(?:\s+\((?P<path>[\w/]+\.py)\))?"
)
ROOT = re.compile(r"^(?P<indent> +)(?P<name>[A-Z]\w+)\b")


def _import_everything() -> None:
    for module in pkgutil.walk_packages(remotecli.__path__, "remotecli."):
        # A __main__ runs its command when imported as the main module only; skipped anyway.
        if not module.name.startswith(OUTSIDE) and not module.name.endswith(".__main__"):
            importlib.import_module(module.name)


def _tree() -> list[type[RemoteCliError]]:
    _import_everything()
    found: list[type[RemoteCliError]] = []
    todo: list[type[RemoteCliError]] = [RemoteCliError]
    while todo:
        cls = todo.pop()
        if cls.__module__.startswith(OUTSIDE):
            continue
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def _where(module: str) -> str:
    """A module's file as the drawings write it (``vmm/qemu/qmp.py``)."""
    file = Path(sys.modules[module].__file__ or "")
    return file.relative_to(PACKAGE).as_posix()


def _drawn(doc: str, here: str) -> dict[tuple[str, str], str | None]:
    """(name, module) -> the drawn parent's name, for each tree drawn in ``doc``."""
    drawn: dict[tuple[str, str], str | None] = {}
    lines = doc.splitlines()
    for number, line in enumerate(lines):
        root = ROOT.match(line)
        following = lines[number + 1] if number + 1 < len(lines) else ""
        if root is None or not following[len(root["indent"]) :].startswith(("├", "└")):
            continue
        margin = len(root["indent"])
        drawn.setdefault((root["name"], here), None)
        parents = [root["name"]]
        for branch_line in lines[number + 1 :]:
            branch = BRANCH.match(branch_line[margin:])
            if branch is None:
                if not branch_line[margin:].startswith("│"):
                    break  # the end of this tree
                continue  # a continuation of the words on the line above
            depth = len(branch["rails"]) // 4 + 1
            parents = parents[:depth]
            drawn[(branch["name"], branch["path"] or here)] = parents[-1]
            parents.append(branch["name"])
    return drawn


def _drawings() -> dict[tuple[str, str], str | None]:
    """Every tree drawn in a docstring of the host's modules, merged."""
    _import_everything()
    merged: dict[tuple[str, str], str | None] = {}
    for name, module in sorted(sys.modules.items()):
        if not name.startswith("remotecli") or name.startswith(OUTSIDE) or not module.__doc__:
            continue
        for key, parent in _drawn(module.__doc__, _where(name)).items():
            if merged.get(key) is None:
                merged[key] = parent
    return merged


def _parent(cls: type[RemoteCliError]) -> str | None:
    """The base the tree hangs a class under: its first base inside the tree."""
    inside = [b for b in cls.__bases__ if issubclass(b, RemoteCliError)]
    return inside[0].__name__ if inside else None


def test_the_walk_sees_the_whole_tree() -> None:
    names = {cls.__name__ for cls in _tree()}
    assert {"NotReady", "QmpError", "VmStateError", "AgentFailed", "CredentialsBusy"} <= names


def test_every_error_is_drawn_under_its_parent_with_its_module() -> None:
    drawn = _drawings()
    for cls in _tree():
        key = (cls.__name__, _where(cls.__module__))
        assert key in drawn, (
            f"{cls.__name__} ({_where(cls.__module__)}) is not drawn in a docstring"
        )
        if cls is not RemoteCliError:
            assert drawn[key] == _parent(cls), f"{key} is drawn under {drawn[key]}"


def test_a_class_outside_errors_py_is_named_in_its_own_module() -> None:
    for cls in _tree():
        doc = sys.modules[cls.__module__].__doc__ or ""
        if cls.__module__ != errors.__name__:
            assert cls.__name__ in doc, f"{cls.__module__}'s docstring does not name it"
            assert str(_parent(cls)) in doc, f"{cls.__module__}'s docstring lacks its parent"


def test_every_error_has_a_status_from_the_table_alone() -> None:
    for cls in _tree():
        assert "status" not in vars(cls), f"{cls.__name__} names a status beside the table"
        error = cls.__new__(cls)
        assert 400 <= status_for(error) < 600, cls


@pytest.mark.parametrize(
    ("cls", "status"),
    [
        # The statuses the API gave before it mapped by type (by code, exact codes only).
        (errors.NotReady, 503),
        (errors.BackendUnavailable, 503),
        (errors.VmError, 502),
        (AgentUnreachable, 502),
        (errors.ImageError, 503),
        (errors.CommandFailed, 500),
        (errors.RemoteCliError, 500),
        (HandshakeError, 500),
        (IllegalTransition, 500),
        (UnsafeSettings, 500),
    ],
)
def test_library_errors_keep_their_status(cls: type[RemoteCliError], status: int) -> None:
    assert status == status_for(cls.__new__(cls))


def test_an_agent_cannot_choose_the_controllers_status() -> None:
    # Its code and status are its own; before, a code such as vm_not_ready made a 503.
    assert status_for(AgentRequestError(404, "vm_not_ready", "not here")) == 500


def test_the_former_stdlib_errors_are_in_the_tree() -> None:
    for cls in (IllegalTransition, UnsafeSettings, HandshakeError):
        assert issubclass(cls, RemoteCliError), cls
    # Kept where something relies on it: pydantic wraps only a ValueError, a connect an OSError;
    # nothing caught the auth flow's BadTransition (now IllegalTransition) as a RuntimeError.
    assert issubclass(UnsafeSettings, ValueError)
    assert issubclass(HandshakeError, OSError)
    # The providers' tree runs inside the VM (stdlib only): its own, drawn beside its classes.
    assert not issubclass(ProviderError, RemoteCliError)
    assert issubclass(ProviderError, ValueError)


@pytest.mark.parametrize(
    ("agent_status", "cls", "status"),
    [
        (400, BadRequest, 400),
        (409, Conflict, 409),
        (413, PayloadTooLarge, 413),
        (422, Unprocessable, 422),
        (500, BadGateway, 502),
        (502, BadGateway, 502),
    ],
)
def test_a_login_relays_the_agents_verdict_by_type(
    agent_status: int, cls: type[RemoteCliError], status: int
) -> None:
    relayed = relay_error(AgentRequestError(agent_status, "state_mismatch", "not this login"))
    assert (type(relayed), status, relayed.code) == (cls, status_for(relayed), "state_mismatch")


def test_a_lost_login_is_a_conflict() -> None:
    relayed = relay_error(AgentRequestError(404, "unknown_session", "gone"))
    assert (type(relayed), relayed.code, status_for(relayed)) == (Conflict, "login_lost", 409)


@pytest.mark.parametrize(
    ("code", "cls", "status"),
    [
        ("vm_not_ready", Unavailable, 503),
        ("backend_unavailable", Unavailable, 503),
        ("agent_unreachable", BadGateway, 502),
        (None, BadGateway, 502),
    ],
)
def test_a_failed_start_answers_by_the_sessions_error(
    code: str | None, cls: type[RemoteCliError], status: int
) -> None:
    row = AuthSession(
        id="auth_0123456789abcdef",
        error_code=code,
        error_message="it failed",
        error_detail={"code": code, "message": "it failed", "backend": "fake"},
    )
    error = start_failed(row)
    body = {"code": code or "login_failed", "message": "it failed",
            "sessionId": row.id, "backend": "fake"}  # fmt: skip
    assert (type(error), status_for(error), error.to_dict()) == (cls, status, body)
