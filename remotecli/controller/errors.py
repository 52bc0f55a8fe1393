"""The API's errors: every failure is JSON ``{"code", "message", ...}`` with a 4xx/5xx.

Routes raise ``ApiError`` subclasses, one per HTTP status (``ApiError`` is a
``RemoteCliError``: the tree drawn in ``remotecli/errors.py``). The status of
every error of that tree, these included, is looked up by its type in one
table, ``controller/api/status.py``, so e.g. a VM that never got ready reaches
the caller as a 503 with the readiness evidence, never a bare timeout::

    ApiError                        code + message + details (keyword arguments)
    ├── BadRequest                  well-formed but refused
    ├── Unauthorized                no, unknown or revoked token
    ├── Forbidden                   this token may not do this
    ├── NotFound                    what the path names does not exist
    ├── Conflict                    not in a state that allows this
    │   └── CredentialsBusy         (controller/vault/leases.py) another run holds them
    ├── PayloadTooLarge             the agent refused the answer's size (relayed)
    ├── Unprocessable               the agent could not use the answer (relayed)
    ├── BadGateway                  the VM's agent failed
    │   └── AgentFailed             (controller/prompts/outcome.py) in a prompt run
    ├── Unavailable                 the database, the login or VM service is away
    └── StorageFull                 the database's disk is full
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import exc as sa_exc

from remotecli.errors import RemoteCliError


class ApiError(RemoteCliError):
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, **details: Any) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, **self.details}


class BadRequest(ApiError):
    pass


class Unauthorized(ApiError):
    code = "unauthorized"


class Forbidden(ApiError):
    code = "forbidden"


class NotFound(ApiError):
    code = "not_found"


class Conflict(ApiError):
    code = "conflict"


class PayloadTooLarge(ApiError):
    code = "payload_too_large"


class Unprocessable(ApiError):
    code = "unprocessable"


class BadGateway(ApiError):
    code = "bad_gateway"


class Unavailable(ApiError):
    code = "unavailable"


class StorageFull(ApiError):
    code = "storage_full"


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
