"""The host side's exception tree. Every error says what happened and what to do.

Every error the host side raises on purpose is in this one tree. A class
defined outside this module names its module in brackets, and that module's
docstring draws its part of the tree too::

    RemoteCliError                  message + to_dict() for the API / CLI
    ├── CommandFailed               a subprocess exited non-zero or timed out
    │                               (argv, exit code, stderr tail, timeout)
    ├── ImageError                  the golden image cannot be built or is unusable
    │   └── BuildFailed             (images/progress.py) names the stage and its cause
    ├── BackendUnavailable          this host cannot run that VM backend (and why)
    ├── VmError                     something went wrong with one instance
    │   ├── NotReady                an instance missed a readiness deadline:
    │   │                           last phase reached, time in each phase,
    │   │                           console tail, agent unit state, a hint
    │   ├── QmpError                (vmm/qemu/qmp.py) QEMU refused a command
    │   ├── FirecrackerApiError     (vmm/firecracker/api.py) Firecracker refused a request
    │   └── HandshakeError          (vmm/endpoint.py) the vsock CONNECT was refused
    │                               (an OSError too: a failed connect)
    ├── AgentUnreachable            (vmm/agentclient.py) the VM's agent did not answer
    ├── AgentRequestError           (vmm/agentclient.py) it answered with an error
    ├── VaultError                  (controller/vault/cipher.py) a key is missing or
    │                               wrong, a record does not open
    ├── CaptureError                (controller/vault/credentials.py) a login's
    │                               credential files cannot be stored
    ├── IllegalTransition           (states.py) a state change its enum's table does not
    │   │                           have (a bug, or two writers racing): old and new
    │   └── VmStateError            (controller/fleet/states.py) a VM row's; also a VmError
    ├── UnsafeSettings              (controller/settings.py) a development default in
    │                               production (a ValueError too: pydantic's rule)
    ├── ApiError                    (controller/errors.py) the API's own errors, one
    │                               per HTTP status: that subtree is drawn there
    ├── ApiError                    (commands/api.py) the CLI: the controller said no
    └── Unreachable                 (commands/api.py) the CLI: the controller is away

Two trees stay outside, because the code that raises them runs inside the VM
on a bare python3 and imports nothing outside ``agent/`` and ``providers/``:
the agent's (``remotecli/agent/errors.py``) and the providers'
(``ProviderError``, ``remotecli/providers/base.py``: a ``ValueError``); the
host translates a provider's error where it calls one (``UnknownProvider`` ->
``BadRequest`` in ``controller/auth/checks.py``). Not errors either: the
control-flow signals that never leave their module (``LoginStopped`` in
``controller/auth/driver.py``, ``Doomed`` in ``controller/fleet/lifecycle.py``).

The CLI catches ``RemoteCliError`` once at its edge; the API turns
``to_dict()`` into a JSON body with the status ``controller/api/status.py``
maps the error's type to.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class RemoteCliError(Exception):
    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message}


class CommandFailed(RemoteCliError):
    code = "command_failed"

    def __init__(
        self,
        argv: Sequence[str],
        *,
        exit_code: int | None,
        stderr_tail: str,
        timeout: float | None = None,
        hint: str = "",
    ) -> None:
        self.argv = list(argv)
        self.exit_code = exit_code
        self.stderr_tail = stderr_tail
        self.timeout = timeout
        what = (
            f"timed out after {timeout:.0f} s"
            if timeout is not None
            else f"exited with code {exit_code}"
        )
        message = f"`{' '.join(self.argv)}` {what}"
        if stderr_tail.strip():
            message += f":\n{stderr_tail.rstrip()}"
        if hint:
            message += f"\n{hint}"
        super().__init__(message)

    def to_dict(self) -> dict[str, Any]:
        return {
            **super().to_dict(),
            "argv": self.argv,
            "exitCode": self.exit_code,
            "stderrTail": self.stderr_tail,
            "timeout": self.timeout,
        }


class ImageError(RemoteCliError):
    code = "image_error"


class BackendUnavailable(RemoteCliError):
    code = "backend_unavailable"


class VmError(RemoteCliError):
    code = "vm_error"


class NotReady(VmError):
    """An instance missed a readiness deadline; carries the evidence.

    ``phases`` maps each phase reached to the seconds spent reaching it from
    the previous one; ``skipped`` names phases this backend does not have
    (a container has no kernel to boot) with the reason; ``cause`` is the
    machine-readable diagnosis (``vmm/diagnose.py``: ``agent_crashed``,
    ``network_online_blocked``, ``port_in_use``, ...) and ``hint`` its words.
    """

    code = "vm_not_ready"

    def __init__(
        self,
        *,
        instance_id: str,
        backend: str,
        last_phase: str | None,
        waiting_for: str,
        deadline: float,
        phases: dict[str, float],
        skipped: dict[str, str],
        console_tail: str,
        unit_state: str | None,
        hint: str,
        cause: str = "unknown",
    ) -> None:
        self.instance_id = instance_id
        self.cause = cause
        self.backend = backend
        self.last_phase = last_phase
        self.waiting_for = waiting_for
        self.deadline = deadline
        self.phases = phases
        self.skipped = skipped
        self.console_tail = console_tail
        self.unit_state = unit_state
        self.hint = hint
        reached = last_phase or "nothing"
        super().__init__(
            f"{backend} instance {instance_id} not ready: reached {reached}, then waited "
            f"{deadline:.1f} s for {waiting_for}. {hint}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            **super().to_dict(),
            "instanceId": self.instance_id,
            "backend": self.backend,
            "lastPhase": self.last_phase,
            "waitingFor": self.waiting_for,
            "deadlineSeconds": self.deadline,
            "phases": self.phases,
            "skipped": self.skipped,
            "consoleTail": self.console_tail,
            "unitState": self.unit_state,
            "cause": self.cause,
            "hint": self.hint,
        }
