"""The agent's API as an OpenAPI 3.1 document, generated from the wire (``wire.py``).

``DOCUMENT`` describes every route of ``wire.ROUTES``: its path and query
parameters and its request body (from the request's dataclass), its answer
(from the answer's dataclass) and the error shape of ``errors.py``
(``{"code", "message"}``). Nothing here is kept by hand beside the wire but
the descriptions of the error statuses. ``tests/fuzz/test_agent_api.py``
fails when the document and the router drift apart, and fuzzes the real agent
process from it. Stdlib only: the module ships in the guest image.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from remotecli import __version__
from remotecli.agent import codec, wire

_ERRORS = {
    400: "malformed input or failed validation (bad_request, invalid_json, invalid_body, ...)",
    401: "missing or wrong VM token (token_required, invalid_token)",
    404: "unknown session, run or provider",
    409: "the session is not in a state that allows this",
    413: "the request body is over the agent's limit",
    502: "the CLI's own listener refused or vanished, or the identity could not be applied",
}
#: Answers named in ``components``, referred to from the operations.
_NAMED = (wire.Health, wire.Session, wire.Credentials, wire.RunInfo)


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _answer_schema(cls: type) -> dict[str, Any]:
    if cls in _NAMED:
        return {"$ref": f"#/components/schemas/{_component(cls)}"}
    document = codec.schema(cls)
    for key, item in document["properties"].items():
        # A list of a named answer (GET /sessions, GET /prompts) refers to it.
        items = item.get("items")
        named = [c for c in _NAMED if items == codec.schema(c)]
        if named:
            document["properties"][key] = item | {"items": _answer_schema(named[0])}
    return document


def _component(cls: type) -> str:
    return "Run" if cls is wire.RunInfo else cls.__name__


def _parameters(route: wire.Route) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    hints = codec.hints(route.request)
    for f in dataclasses.fields(route.request):
        where = codec.where_of(f)
        if where == "body":
            continue
        schema = codec.type_schema(hints[f.name]) | f.metadata.get("schema", {})
        required = where == "path" or (
            f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        )
        out.append({"name": codec.key_of(f), "in": where, "required": required, "schema": schema})
    return out


def operation(route: wire.Route) -> dict[str, Any]:
    """The OpenAPI operation of one route."""
    if route.answer is None:
        ok = {"description": route.answered, "content": {"application/x-ndjson": {}}}
    else:
        schema = _answer_schema(route.answer)
        ok = {"description": route.answered, "content": {"application/json": {"schema": schema}}}
    # Every route but /health checks the VM token first; any route can meet a 413
    # (body over the cap) and any request the HTTP layer cannot read (400).
    codes = {400, 413, *route.errors} | (set() if route.public else {401})
    responses = {str(route.status): ok} | {str(c): _error(_ERRORS[c]) for c in sorted(codes)}
    out: dict[str, Any] = {"summary": route.summary, "responses": responses}
    if parameters := _parameters(route):
        out["parameters"] = parameters
    body = codec.schema(route.request)
    if body["properties"]:
        out["requestBody"] = {"required": False, "content": {"application/json": {"schema": body}}}
    if route.public:
        out["security"] = []
    return out


def _paths() -> dict[str, dict[str, Any]]:
    paths: dict[str, dict[str, Any]] = {}
    for route in wire.ROUTES:
        assert re.fullmatch(r"(/[\w{}-]+)+", route.path), route.path
        paths.setdefault(route.path, {})[route.method.lower()] = operation(route)
    return paths


PATHS: dict[str, dict[str, Any]] = _paths()

COMPONENTS: dict[str, Any] = {
    "securitySchemes": {"vmToken": {"type": "http", "scheme": "bearer"}},
    "schemas": {
        "Error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        },
        **{_component(cls): codec.schema(cls) for cls in _NAMED},
        # What POST /prompts streams, one per NDJSON line.
        "RunEvent": {"oneOf": [codec.schema(cls) for cls in wire.EVENTS.values()]},
    },
}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "remote-cli agent",
        "version": __version__,
        "description": "The in-VM agent. Every error is JSON with a `code` and a `message`.",
    },
    "security": [{"vmToken": []}],
    "paths": PATHS,
    "components": COMPONENTS,
}
