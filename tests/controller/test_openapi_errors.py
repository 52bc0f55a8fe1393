"""The OpenAPI document declares every operation's errors in the one error shape.

``controller/openapi.py`` writes them; ``tests/fuzz`` checks the answers
against the document (status codes included). Here: the document itself, and
real error answers of each kind validated against its ``Error`` schema.
"""

from __future__ import annotations

from typing import Any

from remotecli.controller.api.openapi import ERROR_REF, ERROR_SCHEMA
from tests.support.controller import Controller


def _operations(document: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{method.upper()} {path}", operation)
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
    ]


def test_every_operation_declares_its_errors_in_the_error_shape(
    controller: Controller,
) -> None:
    document = controller.client(token=None).get("/openapi.json").json()
    assert document["components"]["schemas"]["Error"] == ERROR_SCHEMA
    assert "HTTPValidationError" not in document["components"]["schemas"]
    operations = _operations(document)
    assert len(operations) > 20, operations
    for name, operation in operations:
        responses = operation["responses"]
        assert {"503", "507"} <= set(responses), f"{name}: {sorted(responses)}"
        parameters = operation.get("parameters", [])
        if any(p["in"] == "header" and p["name"] == "authorization" for p in parameters):
            assert {"401", "403"} <= set(responses), f"{name}: {sorted(responses)}"
        if any(p["in"] == "path" for p in parameters):
            assert "404" in responses, f"{name}: {sorted(responses)}"
        for status, answer in responses.items():
            if status[0] in "45":
                schema = answer["content"]["application/json"]["schema"]
                assert schema == ERROR_REF, f"{name} {status}: {answer}"
                assert answer["description"], f"{name} {status}"


def test_real_error_answers_have_the_declared_shape(controller: Controller) -> None:
    admin, anonymous = controller.client(), controller.client(token=None)
    answers = {
        401: anonymous.get("/api/users"),
        404: admin.get("/api/users/nobody-here"),
        422: admin.post("/api/users", json={"id": 42}),
        405: admin.put("/api/users"),
    }
    for status, answer in answers.items():
        assert answer.status_code == status, answer.text
        body = answer.json()
        assert set(ERROR_SCHEMA["required"]) <= set(body), body
        assert all(isinstance(body[k], str) and body[k] for k in ("code", "message")), body
