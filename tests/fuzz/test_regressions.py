"""What fuzzing the controller found, kept as plain regression tests (real controller, SQLite)."""

from __future__ import annotations

import sqlite3
from datetime import datetime

from tests.controller.prompt_support import PromptWorld


def test_routing_errors_are_json_with_code_and_message(fuzz_world: PromptWorld) -> None:
    """Starlette's own 404/405 used to answer {"detail": ...}, not the project's error shape."""
    client = fuzz_world.controller.client()
    missing = client.get("/api/no-such-route")
    wrong_method = client.request("TRACE", "/api/health")
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found"), missing.text
    assert missing.json()["message"] == "no endpoint GET /api/no-such-route; see /docs"
    assert (wrong_method.status_code, wrong_method.json()["code"]) == (
        405,
        "method_not_allowed",
    ), wrong_method.text
    assert wrong_method.headers["allow"] == "GET", wrong_method.headers


def test_a_created_row_is_committed_before_the_answer(fuzz_world: PromptWorld) -> None:
    """The session's commit used to run after the 201 was sent (FastAPI ends a yield
    dependency after the response by default): a row read right after could be missing."""
    client = fuzz_world.controller.client()
    url = fuzz_world.controller.settings.database_url or ""
    for n in range(20):
        created = client.post("/api/users", json={"id": f"fz-commit-{n}"})
        assert created.status_code == 201, created.text
        with sqlite3.connect(url.removeprefix("sqlite+aiosqlite:///")) as connection:
            rows = connection.execute("SELECT id FROM users WHERE id = ?", (f"fz-commit-{n}",))
            assert rows.fetchall() == [(f"fz-commit-{n}",)], f"user {n} not committed at 201"


def test_timestamps_in_answers_carry_their_zone(fuzz_world: PromptWorld) -> None:
    """SQLite hands datetimes back naive: createdAt was no RFC 3339 date-time (no offset)."""
    client = fuzz_world.controller.client()
    client.post("/api/users", json={"id": "fz-zone"})
    stamp = client.get("/api/users/fz-zone").json()["createdAt"]
    assert datetime.fromisoformat(stamp).utcoffset() is not None, stamp
