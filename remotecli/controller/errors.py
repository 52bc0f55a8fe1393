"""The API's errors: every failure is JSON ``{"code", "message", ...}`` with a 4xx/5xx.

Routes raise ``ApiError`` subclasses; the library's ``RemoteCliError`` tree is
mapped in ``STATUS_BY_CODE`` (one table), so e.g. a VM that never got ready
reaches the caller as a 503 with the readiness evidence, never a bare timeout.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import exc as sa_exc

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


class StorageFull(ApiError):
    status = 507
    code = "storage_full"


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


#: PostgreSQL's SQLSTATE for disk_full; SQLite says "database or disk is full" (SQLITE_FULL).
_DISK_FULL_SQLSTATE = "53100"
_DISK_FULL_TEXT = ("database or disk is full", "No space left on device")


def database_error(error: sa_exc.SQLAlchemyError) -> ApiError | None:
    """A database failure the caller can act on (retry, free space), as an API error.

    None for anything else (a constraint, a bad query: a bug, left to the 500
    handler). The message never carries the driver's text: it can hold SQL,
    parameters or the server's address.
    """
    orig = getattr(error, "orig", None)
    if getattr(orig, "sqlstate", None) == _DISK_FULL_SQLSTATE or any(
        text in str(orig or error) for text in _DISK_FULL_TEXT
    ):
        return StorageFull(
            "the controller's database could not write: its disk is full. Nothing new was "
            "stored; free space on the database's disk, then retry"
        )
    if isinstance(error, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.TimeoutError):
        return Unavailable(
            "the controller's database is unavailable (down, unreachable or busy); "
            "retry in a few seconds",
            code="database_unavailable",
        )
    return None
