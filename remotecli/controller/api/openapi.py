"""The error answers in the controller's OpenAPI document, declared once for every route.

Every error is JSON ``{"code", "message", ...}`` (``errors.py``). Which errors
a route can give mostly follows from how it is built, so they are written into
the document here instead of into every route:

- every route: 503 (``database_unavailable``, login or VM service away) and
  507 (``storage_full``);
- a route with parameters or a body: 400 (well-formed but refused) and 422
  ``invalid_request`` (FastAPI's own ``HTTPValidationError`` shape is
  replaced: ``app.invalid_request`` answers ours);
- a route that takes an API token (``deps.get_principal`` among its
  dependencies, seen as its ``Authorization`` header parameter): 401
  (``token_required``, ``invalid_token``) and 403 (``csrf_required``,
  ``forbidden_user``, ``admin_required``);
- a route with path parameters: 404 (the thing it names does not exist).

What only a route knows (409 ``session_ended``, 502 ``agent_unreachable``, ...)
it declares itself with ``responses=``; its description is kept and the error
shape is added. ``tests/fuzz`` checks the app against this document, status
codes included.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "required": ["code", "message"],
    "properties": {
        "code": {"type": "string", "description": "stable, for programs (e.g. invalid_token)"},
        "message": {"type": "string", "description": "for people: what happened, what to do"},
    },
    "additionalProperties": True,
}
ERROR_REF = {"$ref": "#/components/schemas/Error"}

EVERY_ROUTE = {
    "503": "Unavailable: database_unavailable (retry; Retry-After), or a service not running",
    "507": "storage_full: the database's disk is full; nothing was stored",
}
WITH_INPUT = {
    "400": "Well-formed but refused (e.g. unknown_provider, unsupported_login_mode)",
    "422": "invalid_request: the parameters or the body are not valid (problems)",
}
WITH_TOKEN = {
    "401": "token_required or invalid_token: no, unknown or revoked API token",
    "403": "csrf_required, forbidden_user or admin_required: this token may not do this",
}
WITH_PATH = {"404": "What the path names does not exist (or is not yours)"}


def install(app: FastAPI) -> None:
    """Make ``app.openapi()`` produce the document with the error answers."""

    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            add_error_answers(generate())  # FastAPI keeps it in openapi_schema
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


def add_error_answers(document: dict[str, Any]) -> None:
    """Declare each operation's errors, read from the operation itself (its parameters)."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas["Error"] = ERROR_SCHEMA
    for operations in document["paths"].values():
        for operation in operations.values():
            _declare(operation["responses"], _errors_of(operation))
    if not _refers_to(document["paths"], "HTTPValidationError"):
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)


def _errors_of(operation: dict[str, Any]) -> dict[str, str]:
    errors = dict(EVERY_ROUTE)
    parameters = operation.get("parameters", [])
    if parameters or "requestBody" in operation:
        errors.update(WITH_INPUT)
    # deps.get_principal reads the bearer header: every route that takes a token has it.
    if any(p["in"] == "header" and p["name"].lower() == "authorization" for p in parameters):
        errors.update(WITH_TOKEN)
    if any(p["in"] == "path" for p in parameters):
        errors.update(WITH_PATH)
    return errors


def _declare(responses: dict[str, Any], errors: dict[str, str]) -> None:
    for status, description in errors.items():
        if status == "422" or status not in responses:
            responses[status] = {"description": description}
    for status, answer in responses.items():
        if status[0] in "45":
            answer["content"] = {"application/json": {"schema": ERROR_REF}}


def _refers_to(value: Any, name: str) -> bool:
    if isinstance(value, dict):
        return value.get("$ref") == f"#/components/schemas/{name}" or any(
            _refers_to(v, name) for v in value.values()
        )
    if isinstance(value, list):
        return any(_refers_to(v, name) for v in value)
    return False
