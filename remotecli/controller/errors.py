"""The API's errors: every failure is JSON ``{"code", "message", ...}`` with a 4xx/5xx.

Routes raise ``ApiError`` subclasses; the library's ``RemoteCliError`` tree is
mapped in ``STATUS_BY_CODE`` (one table), so e.g. a VM that never got ready
reaches the caller as a 503 with the readiness evidence, never a bare timeout.
"""

from __future__ import annotations

from typing import Any

from remotecli.errors import RemoteCliError


class ApiError(RemoteCliError):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, **details: Any) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, **self.details}


class BadRequest(ApiError):
    status = 400


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"


class Forbidden(ApiError):
    status = 403
    code = "forbidden"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class Conflict(ApiError):
    status = 409
    code = "conflict"


class Unavailable(ApiError):
    status = 503
    code = "unavailable"


#: HTTP status for library errors, by their ``code``.
STATUS_BY_CODE: dict[str, int] = {
    "vm_not_ready": 503,
    "backend_unavailable": 503,
    "vm_error": 502,
    "agent_unreachable": 502,
    "image_error": 503,
    "vault_error": 500,
    "command_failed": 500,
}


def status_for(error: RemoteCliError) -> int:
    if isinstance(error, ApiError):
        return error.status
    return STATUS_BY_CODE.get(error.code, 500)
