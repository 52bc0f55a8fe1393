"""The HTTP status of every error of the project's tree, by its type, in one table.

``status_for(error)`` walks the error's classes (its MRO) and answers with the
first one ``STATUS_BY_TYPE`` names; ``RemoteCliError`` itself is there, so
every error of the tree (drawn in ``remotecli/errors.py``) has a status. The
app's exception handlers (``app.py``) are the only callers: no route, no
error class and no code string decides a status.

The table sits here, in the HTTP wing, because it names errors from every
layer below (``vmm``, ``images``, the fleet's ``VmStateError``) and the
controller's own ``errors.py`` is imported by those wings.

Some errors carry a ``status`` of their own that is NOT ours: the status the
agent answered with (``AgentRequestError.status``) or Firecracker's
(``FirecrackerApiError.status``). The caller's status comes from the type
alone, so an agent (a VM is not trusted) cannot choose the controller's.
"""

from __future__ import annotations

from remotecli.controller.errors import (
    ApiError,
    BadGateway,
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    StorageFull,
    Unauthorized,
    Unavailable,
    Unprocessable,
)
from remotecli.controller.fleet.states import VmStateError
from remotecli.controller.vault.cipher import VaultError
from remotecli.errors import (
    BackendUnavailable,
    CommandFailed,
    ImageError,
    NotReady,
    RemoteCliError,
    VmError,
)
from remotecli.images.progress import BuildFailed
from remotecli.vmm.agentclient import AgentRequestError, AgentUnreachable
from remotecli.vmm.endpoint import HandshakeError
from remotecli.vmm.firecracker.api import FirecrackerApiError
from remotecli.vmm.qemu.qmp import QmpError

STATUS_BY_TYPE: dict[type[RemoteCliError], int] = {
    # Whatever is not named below: an error we did not expect to answer with.
    RemoteCliError: 500,
    # The API's own (controller/errors.py): one class per status.
    ApiError: 400,
    BadRequest: 400,
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    PayloadTooLarge: 413,
    Unprocessable: 422,
    BadGateway: 502,
    Unavailable: 503,
    StorageFull: 507,
    # The library's: the host cannot do it now (503), or a VM failed us (502).
    CommandFailed: 500,
    ImageError: 503,
    BackendUnavailable: 503,
    VmError: 502,
    NotReady: 503,
    AgentUnreachable: 502,
    AgentRequestError: 500,
    VaultError: 500,
    # These keep the 500 they had when statuses were looked up by exact code (their
    # parents' codes were in that table, theirs were not): a failed image stage, QEMU's or
    # Firecracker's refusal, a VM row's refused state change, a refused vsock CONNECT.
    BuildFailed: 500,
    QmpError: 500,
    FirecrackerApiError: 500,
    VmStateError: 500,
    HandshakeError: 500,
}


def status_for(error: RemoteCliError) -> int:
    """The HTTP status the API answers ``error`` with: the nearest class in the table."""
    for cls in type(error).__mro__:
        status = STATUS_BY_TYPE.get(cls)
        if status is not None:
            return status
    raise AssertionError(f"{type(error).__name__} is not a RemoteCliError")  # pragma: no cover
