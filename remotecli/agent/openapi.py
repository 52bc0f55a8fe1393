"""The agent's API as an OpenAPI 3.1 document (the router in ``app.py`` is hand-written).

``DOCUMENT`` describes every route ``AgentApp`` serves: the parameters, the
request bodies and the error shape of ``errors.py`` (``{"code", "message"}``).
``tests/fuzz/test_agent_api.py`` fails when it and the route table drift
apart, and fuzzes the real agent process from it. Plain data, stdlib only:
the module ships in the guest image with the rest of the agent.
"""

from __future__ import annotations

from typing import Any

from remotecli import __version__

_PROVIDER_NOTE = "claude_code, codex or gemini_cli (another name is a 404)"
#: A provider in a request: any string is accepted on the wire (an unknown one is a 404).
_PROVIDER = {
    "type": "string",
    "description": _PROVIDER_NOTE,
    "examples": ["claude_code", "codex", "gemini_cli"],
}
_MODES = ["paste_code", "localhost_callback", "device_code", "api_key"]
#: Seconds a request may wait for a login to move on (app.MAX_WAIT_SECONDS).
_WAIT = {"type": "number", "minimum": 0, "maximum": 30}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _ok(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": False, "content": {"application/json": {"schema": schema}}}


def _list(key: str, item: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": [key],
        "properties": {key: {"type": "array", "items": item}},
    }


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _query(name: str, schema: dict[str, Any], *, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema}


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _operation(
    summary: str,
    ok: tuple[str, dict[str, Any]],
    errors: tuple[int, ...],
    *,
    parameters: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
    public: bool = False,
) -> dict[str, Any]:
    status, response = ok
    # Every route but /health checks the VM token first; any route can meet a 413
    # (body over the cap) and any request the HTTP layer cannot read (400).
    codes = {400, 413, *errors} | (set() if public else {401})
    responses = {status: response} | {str(c): _error(_ERRORS[c]) for c in sorted(codes)}
    operation: dict[str, Any] = {"summary": summary, "responses": responses}
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = _body(body)
    if public:
        operation["security"] = []
    return operation


_ERRORS = {
    400: "malformed input or failed validation (bad_request, invalid_json, invalid_body, ...)",
    401: "missing or wrong VM token (token_required, invalid_token)",
    404: "unknown session, run or provider",
    409: "the session is not in a state that allows this",
    413: "the request body is over the agent's limit",
    502: "the CLI's own listener refused or vanished, or the identity could not be applied",
}

_SESSION: dict[str, Any] = {
    "type": "object",
    "required": ["sessionId", "provider", "mode", "phase", "authenticated"],
    "properties": {
        "sessionId": {"type": "string"},
        "provider": {"type": "string"},
        "mode": {"type": "string", "enum": _MODES},
        "phase": {"type": "string"},
        "authenticated": {"type": "boolean"},
        "oauthUrl": {"type": ["string", "null"]},
        "userCode": {"type": ["string", "null"]},
        "instructions": {"type": ["string", "null"]},
        "awaitingCode": {"type": "boolean"},
        "callback": {"type": ["object", "null"]},
        "error": {"type": ["object", "null"]},
        "exitCode": {"type": ["integer", "null"]},
        "createdAt": {"type": "string"},
        "expiresAt": {"type": "string"},
        "timings": {"type": "object"},
        "relayStatus": {"type": ["integer", "null"]},
    },
}
_WAIT_QUERY = [
    _query("sessionId", {"type": "string"}, required=True),
    _query("wait", _WAIT),
]

PATHS: dict[str, dict[str, Any]] = {
    "/health": {
        "get": _operation(
            "Liveness and counts (no token)",
            ("200", _ok(_ref("Health"))),
            (),
            public=True,
        )
    },
    "/auth/{provider}": {
        "post": _operation(
            "Start a login in a PTY",
            ("201", _ok(_ref("Session"), "the login, once it left its starting phase")),
            (404,),
            parameters=[_path("provider") | {"schema": _PROVIDER}],
            body={
                "type": "object",
                "properties": {
                    "mode": {"type": "string", "enum": _MODES},
                    "waitSeconds": _WAIT,
                },
            },
        )
    },
    "/oauth-url": {
        "get": _operation(
            "A login's URL and device code",
            ("200", _ok({"type": "object", "required": ["sessionId", "phase"]})),
            (404,),
            parameters=_WAIT_QUERY,
        )
    },
    "/credentials/status": {
        "get": _operation(
            "Whether a login has ended",
            ("200", _ok({"type": "object", "required": ["sessionId", "authenticated"]})),
            (404,),
            parameters=_WAIT_QUERY,
        )
    },
    "/credentials/write": {
        "post": _operation(
            "Write a provider's credential files",
            ("200", _ok({"type": "object", "required": ["provider", "written", "version"]})),
            (404,),
            body={
                "type": "object",
                "required": ["provider", "files"],
                "properties": {
                    "provider": _PROVIDER,
                    "mode": {"type": "string", "enum": _MODES},
                    "files": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["path", "content"],
                            "properties": {
                                "path": {"type": "string"},
                                "content": {"type": "string"},
                                "encoding": {"type": "string", "enum": ["utf-8", "base64"]},
                            },
                        },
                    },
                },
            },
        )
    },
    "/credentials": {
        "get": _operation(
            "A provider's credential files and their version",
            ("200", _ok(_ref("Credentials"))),
            (404,),
            parameters=[_query("provider", _PROVIDER, required=True)],
        )
    },
    "/sessions": {
        "get": _operation(
            "Every login",
            ("200", _ok(_list("sessions", _ref("Session")))),
            (),
        )
    },
    "/sessions/{id}": {
        "get": _operation(
            "One login", ("200", _ok(_ref("Session"))), (404,), parameters=[_path("id")]
        ),
        "delete": _operation(
            "Cancel a login (its process group is killed)",
            ("200", _ok(_ref("Session"))),
            (404, 409),
            parameters=[_path("id")],
        ),
    },
    "/sessions/{id}/code": {
        "post": _operation(
            "Relay what the user pasted: a code or the callback URL",
            ("200", _ok(_ref("Session"))),
            (404, 409, 502),
            parameters=[_path("id")],
            body={
                "type": "object",
                "properties": {
                    "code": {"type": "string"},
                    "callbackUrl": {"type": "string"},
                    "waitSeconds": _WAIT,
                },
            },
        )
    },
    "/prompts": {
        "post": _operation(
            "Run a prompt headless; NDJSON events, the first proves the CLI started",
            ("200", {"description": "NDJSON events", "content": {"application/x-ndjson": {}}}),
            (404,),
            body={
                "type": "object",
                "required": ["provider", "prompt"],
                "properties": {
                    "provider": _PROVIDER,
                    "prompt": {"type": "string", "minLength": 1, "maxLength": 200_000},
                    "options": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "model": {"type": "string", "pattern": r"^[\w.:/-]{1,100}$"},
                            "permission": {"type": "string"},
                        },
                    },
                    "apiKey": {"type": "string", "minLength": 1},
                    "timeoutSeconds": {"type": "number", "exclusiveMinimum": 0},
                },
            },
        ),
        "get": _operation("The running prompts", ("200", _ok(_list("runs", _ref("Run")))), ()),
    },
    "/prompts/{id}": {
        "delete": _operation(
            "Cancel a running prompt",
            ("202", _ok({"type": "object", "required": ["runId", "cancelling"]})),
            (404,),
            parameters=[_path("id")],
        )
    },
    "/diagnostics": {
        "get": _operation(
            "The seed's checklist answered from inside the VM",
            ("200", _ok({"type": "object"})),
            (),
        )
    },
    "/identity": {
        "post": _operation(
            "A clone of a golden snapshot becomes itself (new token, hostname, entropy, clock)",
            ("200", _ok({"type": "object", "required": ["applied", "skipped", "hostname"]})),
            (502,),
            body={
                "type": "object",
                "additionalProperties": False,
                "required": ["token", "hostname", "entropy"],
                "properties": {
                    "token": {"type": "string", "minLength": 16, "pattern": r"^[\x21-\x7e]+$"},
                    "hostname": {
                        "type": "string",
                        "pattern": r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$",
                    },
                    "entropy": {"type": "string", "description": "base64 of 32 to 512 bytes"},
                    "time": {"type": "number", "description": "seconds since the epoch"},
                },
            },
        )
    },
}

COMPONENTS: dict[str, Any] = {
    "securitySchemes": {"vmToken": {"type": "http", "scheme": "bearer"}},
    "schemas": {
        "Error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        },
        "Health": {
            "type": "object",
            "required": ["status", "activeSessions", "activeRuns", "version"],
            "properties": {
                "status": {"const": "ok"},
                "timestamp": {"type": "string"},
                "activeSessions": {"type": "integer", "minimum": 0},
                "activeRuns": {"type": "integer", "minimum": 0},
                "version": {"type": "string"},
            },
        },
        "Session": _SESSION,
        "Credentials": {
            "type": "object",
            "required": ["provider", "complete", "version", "files", "missing"],
            "properties": {
                "provider": {"type": "string"},
                "complete": {"type": "boolean"},
                "version": {"type": ["string", "null"]},
                "files": {"type": "array"},
                "missing": {"type": "array", "items": {"type": "string"}},
            },
        },
        "Run": {
            "type": "object",
            "required": ["runId", "provider", "startedAt"],
            "properties": {
                "runId": {"type": "string"},
                "provider": {"type": "string"},
                "startedAt": {"type": "string"},
                "exitCode": {"type": ["integer", "null"]},
            },
        },
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
