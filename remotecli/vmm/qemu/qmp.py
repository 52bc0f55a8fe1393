"""A small asyncio client for QEMU's machine protocol (QMP) on a Unix socket.

QMP is JSON lines: on connect QEMU sends a greeting (``{"QMP": {...}}``), the
client must send ``qmp_capabilities`` before anything else, then each
``{"execute": ..., "id": N}`` gets ``{"return": ..., "id": N}`` or
``{"error": {"class": ..., "desc": ...}, "id": N}``. Asynchronous events
(``STOP``, ``RESUME``, ``SHUTDOWN``, ``MIGRATION``...) arrive in between at
any time; they are recorded in ``QmpClient.events`` and otherwise ignored.

Commands go one at a time (a lock), so a response is simply the next line
with our id. ``QmpError`` (a ``VmError``, in the tree drawn in
``remotecli/errors.py``) carries QEMU's own ``desc`` text, the command and
its arguments.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from remotecli.errors import VmError

COMMAND_TIMEOUT = 10.0
#: Responses are small JSON (query-migrate, query-status); a device tree would be larger.
LINE_LIMIT = 1 << 20
#: Events kept for evidence; a VM that is running prints few.
MAX_EVENTS = 200
RETRY_SECONDS = 0.02


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


@dataclass
class QmpClient:
    socket: Path
    timeout: float = COMMAND_TIMEOUT
    #: QEMU's greeting (its version and capabilities), once connected.
    greeting: dict[str, Any] = field(default_factory=dict)
    #: Asynchronous events received so far, oldest first (bounded).
    events: list[dict[str, Any]] = field(default_factory=list)
    _reader: asyncio.StreamReader | None = None
    _writer: asyncio.StreamWriter | None = None
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    @property
    def version(self) -> str:
        """QEMU's version from the greeting (``7.2.22``), or "" before connecting."""
        qemu = self.greeting.get("QMP", {}).get("version", {}).get("qemu", {})
        if not qemu:
            return ""
        return f"{qemu.get('major')}.{qemu.get('minor')}.{qemu.get('micro')}"

    async def connect(self, within: float, *, alive: Callable[[], bool] = lambda: True) -> float:
        """Connect, read the greeting, negotiate capabilities; retry until ``within`` seconds.

        QEMU creates the socket while it starts, so the first attempts may find
        nothing. ``alive`` stops the wait early when the process is gone.
        Returns the seconds it took.
        """
        started = time.monotonic()
        last = "the socket does not exist yet"
        while True:
            try:
                async with asyncio.timeout(self.timeout):
                    reader, writer = await asyncio.open_unix_connection(
                        str(self.socket), limit=LINE_LIMIT
                    )
                break
            except (OSError, TimeoutError) as exc:
                last = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            waited = time.monotonic() - started
            if not alive():
                raise QmpError("connect", f"QEMU exited before its QMP socket answered ({last})")
            if waited > within:
                raise QmpError(
                    "connect", f"{self.socket} did not answer within {within:.1f} s ({last})"
                )
            await asyncio.sleep(RETRY_SECONDS)
        self._reader, self._writer = reader, writer
        try:
            try:
                async with asyncio.timeout(self.timeout):
                    greeting = await self._read("greeting")
            except (OSError, TimeoutError) as exc:
                raise QmpError("greeting", f"no greeting on the QMP socket ({exc!r})") from exc
            if "QMP" not in greeting:
                raise QmpError("greeting", f"expected QEMU's greeting, got {greeting}")
            self.greeting = greeting
            await self.execute("qmp_capabilities")
        except BaseException:
            await self.close()
            raise
        return time.monotonic() - started

    async def execute(
        self,
        command: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> Any:
        """Run one command; return its ``return`` value; raise ``QmpError`` with QEMU's words."""
        if self._writer is None:
            raise QmpError(command, "not connected", arguments=arguments)
        async with self._lock:
            request_id = next(self._ids)
            message: dict[str, Any] = {"execute": command, "id": request_id}
            if arguments:
                message["arguments"] = dict(arguments)
            try:
                async with asyncio.timeout(timeout or self.timeout):
                    self._writer.write(json.dumps(message).encode() + b"\n")
                    await self._writer.drain()
                    while True:
                        reply = await self._read(command, arguments)
                        if reply.get("id") == request_id:
                            break
            except TimeoutError:
                raise QmpError(
                    command,
                    f"no answer within {timeout or self.timeout:.1f} s",
                    arguments=arguments,
                ) from None
            except OSError as exc:
                raise QmpError(
                    command, f"the QMP connection broke: {exc}", arguments=arguments
                ) from exc
        if "error" in reply:
            error = reply["error"]
            raise QmpError(
                command,
                str(error.get("desc", error)),
                error_class=error.get("class"),
                arguments=arguments,
            )
        return reply.get("return")

    async def _read(self, command: str, arguments: Mapping[str, Any] | None = None) -> Any:
        """The next non-event message; events on the way are recorded."""
        assert self._reader is not None
        while True:
            line = await self._reader.readline()
            if not line:
                raise QmpError(
                    command, "QEMU closed the QMP connection (it exited?)", arguments=arguments
                )
            try:
                message = json.loads(line)
            except ValueError:
                raise QmpError(
                    command, f"QEMU sent a line that is not JSON: {line[:200]!r}"
                ) from None
            if not isinstance(message, dict):
                raise QmpError(command, f"QEMU sent {message!r}, not an object")
            if "event" in message:
                self.events.append(message)
                del self.events[:-MAX_EVENTS]
                continue
            return message

    def saw(self, event: str) -> bool:
        return any(e.get("event") == event for e in self.events)

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
