"""QEMU's machine protocol (QMP), spoken through the QEMU project's own asyncio library.

``qemu.qmp.QMPClient`` (PyPI ``qemu.qmp``) does the protocol: QEMU's greeting,
``qmp_capabilities``, each ``{"execute": ..., "id": N}`` matched to its answer,
asynchronous events (``STOP``, ``MIGRATION``...) routed apart from answers
(we keep none: the backend polls ``query-status`` and ``query-migrate``).
``QmpClient`` adds what the backend needs around it:

- ``connect`` retries until the socket answers: QEMU makes it while it starts
  and the library tries once. ``alive`` ends the wait when QEMU is gone.
- every command has a deadline (the library would wait for ever);
- the library's errors are translated here, at the boundary, into ``QmpError``
  (a ``VmError``, code ``qmp_error``, in the tree drawn in ``remotecli/errors.py``)
  carrying QEMU's own ``desc``, the command and its arguments: callers see our
  error tree, not the library's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from qemu.qmp import (
    ConnectError,
    ExecInterruptedError,
    ExecuteError,
    Message,
    QMPClient,
    QMPError,
    Runstate,
    StateError,
)

from remotecli.errors import VmError

COMMAND_TIMEOUT = 10.0
#: Answers are small JSON (query-migrate, query-status); a device tree would be larger.
LINE_LIMIT = 1 << 20
RETRY_SECONDS = 0.02
#: What a command finds once QEMU hung up (the library saw end-of-file and disconnected).
CLOSED = "QEMU closed the QMP connection (it exited?)"


class QmpError(VmError):
    """QEMU refused a command (its error class and text) or its QMP socket did not answer."""

    code = "qmp_error"

    def __init__(
        self,
        command: str,
        desc: str,
        *,
        error_class: str | None = None,
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        self.command = command
        self.desc = desc
        self.error_class = error_class
        self.arguments = dict(arguments or {})
        sent = f" with {json.dumps(self.arguments)}" if self.arguments else ""
        kind = f" ({error_class})" if error_class else ""
        super().__init__(f"QMP {command}{sent} failed{kind}: {desc}")

    def to_dict(self) -> dict[str, Any]:
        return {
            **super().to_dict(),
            "command": self.command,
            "errorClass": self.error_class,
            "desc": self.desc,
        }


class QmpClient:
    """One VM's QMP connection on the Unix socket ``socket`` (QEMU's ``-qmp unix:...``)."""

    def __init__(self, socket: Path, timeout: float = COMMAND_TIMEOUT) -> None:
        self.socket = socket
        self.timeout = timeout
        #: QEMU's version from its greeting (``7.2.22``), or "" before connecting.
        self.version = ""
        self._client: QMPClient | None = None

    async def connect(self, within: float, *, alive: Callable[[], bool] = lambda: True) -> float:
        """Connect, read the greeting, negotiate capabilities; retry until ``within`` seconds.

        QEMU creates the socket while it starts, so the first attempts may find
        nothing. ``alive`` stops the wait early when the process is gone.
        Returns the seconds it took.
        """
        started = time.monotonic()
        last = "the socket does not exist yet"
        while True:
            client = QMPClient(readbuflen=LINE_LIMIT)
            # Its default listener keeps every event for ever (a queue and a history): we
            # read none, and a guest can make QEMU send them (RTC_CHANGE, up to one a second).
            client.events.event_filter = _no_event
            # Only once the socket exists: each failed try is an error line in the library's log.
            if self.socket.exists():
                try:
                    async with asyncio.timeout(self.timeout):
                        await client.connect(str(self.socket))
                    break
                except TimeoutError as exc:
                    raise QmpError("greeting", f"no greeting on the QMP socket ({exc!r})") from exc
                except ConnectError as exc:
                    if not isinstance(exc.exc, OSError):  # QEMU answered, but not as QMP
                        raise _session_error(exc) from exc
                    last = exc.exc.strerror or str(exc.exc) or type(exc.exc).__name__
            waited = time.monotonic() - started
            if not alive():
                raise QmpError("connect", f"QEMU exited before its QMP socket answered ({last})")
            if waited > within:
                raise QmpError(
                    "connect", f"{self.socket} did not answer within {within:.1f} s ({last})"
                )
            await asyncio.sleep(RETRY_SECONDS)
        self._client = client
        self.version = _version(client)
        return time.monotonic() - started

    async def execute(
        self,
        command: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> Any:
        """Run one command; return its ``return`` value; raise ``QmpError`` with QEMU's words."""
        client = self._client
        if client is None:
            raise QmpError(command, "not connected", arguments=arguments)
        if client.runstate is not Runstate.RUNNING:
            raise QmpError(command, CLOSED, arguments=arguments)
        limit = timeout or self.timeout
        try:
            async with asyncio.timeout(limit):
                return await client.execute(command, arguments)
        except ExecuteError as exc:
            raise QmpError(
                command,
                exc.error.error.desc,
                error_class=exc.error_class,
                arguments=arguments,
            ) from exc
        except (ExecInterruptedError, StateError) as exc:
            raise QmpError(command, CLOSED, arguments=arguments) from exc
        except TimeoutError:
            why = f"no answer within {limit:.1f} s"
            raise QmpError(command, why, arguments=arguments) from None
        except QMPError as exc:  # a reply the library could not parse or route
            raise QmpError(command, str(exc), arguments=arguments) from exc

    async def close(self) -> None:
        """Hang up (idempotent)."""
        client, self._client = self._client, None
        if client is not None:
            # Raises what ended the connection (QEMU's end-of-file, a reset): the VM is
            # going away, so that is no news.
            with contextlib.suppress(QMPError, OSError, EOFError):
                await client.disconnect()


def _no_event(event: Message) -> bool:
    return False


def _session_error(exc: ConnectError) -> QmpError:
    """The socket answered but the session failed: EOF (QEMU exited), a bad greeting..."""
    if isinstance(exc.exc, EOFError):
        return QmpError("greeting", CLOSED)
    return QmpError("greeting", str(exc.exc))


def _version(client: QMPClient) -> str:
    greeting = client.greeting
    qemu = greeting.QMP.version.get("qemu") if greeting is not None else None
    if not isinstance(qemu, Mapping):
        return ""
    return f"{qemu.get('major')}.{qemu.get('minor')}.{qemu.get('micro')}"
