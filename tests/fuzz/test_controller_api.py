"""Hostile input against the real controller: every operation of its OpenAPI, fuzzed.

Schemathesis draws requests from the document ``create_app`` serves at
``/openapi.json`` and sends them to the real controller (uvicorn, SQLite, every
service on the fake backend, no warm pool), once with an admin token and once
with a user's token. For every answer (``support.check_answer``): no 5xx, no
stack trace or code path, every 4xx the project's JSON error, and the body
conforms to the declared schema where one is declared. For every rejected
request that could change something (not GET), the database is the same
before and after. A user's request naming another user never succeeds.

A login that fuzzing manages to start (a user it created, a real provider) is
real work: it claims a VM (an agent process). It is cancelled at once and the
test waits until its VM is gone, so none piles up; the module ends by checking
that no VM is left running.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from sqlalchemy import Engine, inspect, text

from remotecli.controller.db.models import AuthPhase, VmState
from remotecli.controller.settings import Settings
from remotecli.server.app import create_app
from tests.fuzz.support import FUZZ_SETTINGS, FuzzCase, call_checked, describe
from tests.support import procfs
from tests.support.controller import Controller
from tests.support.faults import processes_of
from tests.support.poll import eventually

#: Columns a request may touch without changing anything: reading with a token
#: records when it was used; the health monitor records when it last looked.
VOLATILE = {"last_used_at", "last_health_at", "health_failures", "updated_at"}
SAFE = {"GET", "HEAD", "OPTIONS"}
ENDED_VM = (VmState.STOPPED.value, VmState.FAILED.value)
ENDED_LOGIN = tuple(p.value for p in AuthPhase if p.ended)
#: The users the user-token run knows: it is ALICE; BOB's data is never hers.
ALICE, BOB = "fz-alice", "fz-bob"


def _document() -> dict[str, Any]:
    # The document only: create_app starts nothing until its lifespan runs.
    settings = Settings(
        environment="test",
        state_dir=Path(tempfile.gettempdir()) / "rcli-fz-unused",
        database_url="sqlite+aiosqlite://",
        backend="fake",
        warm_pool_auth=0,
    )
    document: dict[str, Any] = create_app(settings).openapi()
    return document


SCHEMA = schemathesis.openapi.from_dict(_document())


@pytest.fixture(scope="module")
def user_tokens(fuzz_world: Controller, fuzz_db: Engine) -> Iterator[dict[str, str]]:
    tokens = {user: fuzz_world.user_token(fuzz_world.add_user(user)) for user in (ALICE, BOB)}
    yield tokens
    # Whatever fuzzing started is over: no VM left running (each is an agent process).
    _settle(fuzz_db)
    live = [f"{r['id']} {r['state']}" for r in _rows(fuzz_db, "vms") if r["state"] not in ENDED_VM]
    assert live == [], f"fuzzing left VMs running: {live}"
    # The fake backend's VMs are agent processes naming the state dir: none may be left.
    left = processes_of(fuzz_world.settings.state_dir)
    assert left == [], f"fuzzing left VM processes: {procfs.describe(left)}"


@SCHEMA.parametrize()
@FUZZ_SETTINGS
def test_admin_requests(
    case: FuzzCase, fuzz_world: Controller, fuzz_db: Engine, user_tokens: dict[str, str]
) -> None:
    """With an admin token: no 5xx, no leaks, JSON errors, rejected requests change nothing."""
    _fuzz(case, fuzz_world, fuzz_db, fuzz_world.admin_token, caller=None)


@SCHEMA.parametrize()
@FUZZ_SETTINGS
def test_user_requests(
    case: FuzzCase, fuzz_world: Controller, fuzz_db: Engine, user_tokens: dict[str, str]
) -> None:
    """With ALICE's token: the same, and nothing naming another user succeeds."""
    _fuzz(case, fuzz_world, fuzz_db, user_tokens[ALICE], caller=ALICE)


def _fuzz(case: FuzzCase, world: Controller, db: Engine, token: str, *, caller: str | None) -> None:
    unsafe = case.method.upper() not in SAFE
    before = _digest(db) if unsafe else ""
    bearer = {"Authorization": f"Bearer {token}"}
    response, text = call_checked(case, world.url, bearer, 30)
    status = response.status_code
    if caller is not None and 200 <= status < 300:
        named = _named_users(case)
        assert named <= {caller}, (
            f"{caller}'s token did something for {sorted(named - {caller})}: "
            + describe(case, status, text)
        )
    if unsafe and 200 <= status < 300 and case.path == "/api/auth/start":
        _cancel_login(world, db, response.json()["id"])
    if unsafe and 400 <= status < 500:
        after = _digest(db)
        assert before == after, (
            f"a rejected request changed the database ({_diff(before, after)}): "
            + describe(case, status, text)
        )


def _named_users(case: FuzzCase) -> set[str]:
    """The user ids a request names: in its path or as ``userId`` in its body."""
    named = set()
    path = case.path_parameters or {}
    if "user_id" in path:
        named.add(str(path["user_id"]))
    if isinstance(case.body, dict) and "userId" in case.body:
        named.add(str(case.body["userId"]))
    return named


def _cancel_login(world: Controller, db: Engine, session_id: str) -> None:
    """A login fuzzing started for real: cancel it and wait until its VM is gone."""
    answer = world.client().delete(f"/api/auth/sessions/{session_id}")
    assert answer.status_code in (200, 409), f"cancelling {session_id}: {answer.text}"
    _settle(db)


def _settle(db: Engine, timeout: float = 60.0) -> None:
    """Wait until no login is under way and no VM is starting, running or stopping."""

    def idle() -> bool:
        # Ids and states only: the rows hold login URLs and sealed VM tokens.
        busy = [f"login {r['id']} {r['phase']}" for r in _rows(db, "auth_sessions")
                if r["phase"] not in ENDED_LOGIN]  # fmt: skip
        busy += [f"vm {r['id']} {r['state']}" for r in _rows(db, "vms")
                 if r["state"] not in ENDED_VM]  # fmt: skip
        assert not busy, f"still under way: {busy}"
        return True

    eventually("no login or VM under way", idle, timeout)


def _rows(db: Engine, table: str) -> list[dict[str, Any]]:
    # The name comes from the database's own table list (or this file), never from a request.
    query = text(f"SELECT * FROM {table}")  # noqa: S608
    with db.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(query)]


def _digest(db: Engine) -> str:
    """Row counts and a hash of the content of every table, volatile columns left out."""
    parts = []
    for table in sorted(inspect(db).get_table_names()):
        rows = _rows(db, table)
        content = sorted(
            repr(sorted((k, v) for k, v in row.items() if k not in VOLATILE)) for row in rows
        )
        digest = hashlib.sha256("\n".join(content).encode()).hexdigest()[:16]
        parts.append(f"{table}={len(rows)}:{digest}")
    return " ".join(parts)


def _diff(before: str, after: str) -> str:
    changed = set(after.split()) - set(before.split())
    return "changed: " + ", ".join(sorted(changed))
