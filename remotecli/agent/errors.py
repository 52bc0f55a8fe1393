"""The agent's errors: every one becomes a JSON body ``{"code", "message"}``.

    AgentError (status, code, message)
    ├── BadRequest        400  malformed input, failed validation
    ├── Unauthorized      401  missing or wrong VM token
    ├── NotFound          404  unknown route, session, run or provider
    ├── MethodNotAllowed  405
    ├── Conflict          409  the session is not in a state that allows this
    ├── PayloadTooLarge   413
    └── UpstreamFailed    502  the CLI's own listener refused or vanished

Provider errors (``remotecli.providers.base.ProviderError``) carry a stable
code and are translated at the HTTP boundary (``app.py``). The agent never
imports outside ``agent/`` and ``providers/``, so it has its own tree; the host
side maps these codes back in its agent client.
"""

from __future__ import annotations

from typing import Any


class AgentError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, **self.details}


class BadRequest(AgentError):
    status = 400
    code = "bad_request"


class Unauthorized(AgentError):
    status = 401
    code = "unauthorized"


class NotFound(AgentError):
    status = 404
    code = "not_found"


class MethodNotAllowed(AgentError):
    status = 405
    code = "method_not_allowed"


class Conflict(AgentError):
    status = 409
    code = "conflict"


class PayloadTooLarge(AgentError):
    status = 413
    code = "body_too_large"


class UpstreamFailed(AgentError):
    status = 502
    code = "upstream_failed"
