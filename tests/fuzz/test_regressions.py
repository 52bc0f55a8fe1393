"""What fuzzing the controller found, as plain regression tests (real controller, SQLite and
PostgreSQL)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, text

from tests.support.controller import Controller


def test_routing_errors_are_json_with_code_and_message(fuzz_world: Controller) -> None:
    """Starlette's own 404/405 used to answer {"detail": ...}, not the project's error shape."""
    client = fuzz_world.client()
    missing = client.get("/api/no-such-route")
    wrong_method = client.request("TRACE", "/api/health")
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found"), missing.text
    assert missing.json()["message"] == "no endpoint GET /api/no-such-route; see /docs"
    assert (wrong_method.status_code, wrong_method.json()["code"]) == (
        405,
        "method_not_allowed",
    ), wrong_method.text
    assert wrong_method.headers["allow"] == "GET", wrong_method.headers


def test_a_created_row_is_committed_before_the_answer(
    fuzz_world: Controller, fuzz_db: Engine
) -> None:
    """The session's commit used to run after the 201 was sent (FastAPI ends a yield
    dependency after the response by default): a row read right after could be missing."""
    client = fuzz_world.client()
    for n in range(20):
        created = client.post("/api/users", json={"id": f"fz-commit-{n}"})
        assert created.status_code == 201, created.text
        with fuzz_db.connect() as connection:
            rows = connection.execute(
                text("SELECT id FROM users WHERE id = :id"), {"id": f"fz-commit-{n}"}
            ).all()
        assert [tuple(r) for r in rows] == [(f"fz-commit-{n}",)], f"user {n} not committed at 201"


def test_timestamps_in_answers_carry_their_zone(fuzz_world: Controller) -> None:
    """SQLite hands datetimes back naive: createdAt was no RFC 3339 date-time (no offset)."""
    client = fuzz_world.client()
    client.post("/api/users", json={"id": "fz-zone"})
    stamp = client.get("/api/users/fz-zone").json()["createdAt"]
    assert datetime.fromisoformat(stamp).utcoffset() is not None, stamp
