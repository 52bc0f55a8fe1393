"""A small async client for Firecracker's HTTP API on its Unix socket (``--api-sock``).

One connection per request (Firecracker answers in well under a millisecond
and a fresh connection cannot carry a stale half-read response). Bodies are
JSON; Firecracker rejects unknown fields and bad values with 400 and
``{"fault_message": ...}``, which ``FirecrackerApiError`` (a ``VmError``, in
the tree drawn in ``remotecli/errors.py``) carries verbatim with the method,
path and our body.

Every request sent is appended to ``ApiClient.sent`` so tests can check each
body against the API description (tests/vmm/fc_openapi.py).

The request shapes follow ``src/firecracker/swagger/firecracker.yaml`` of
Firecracker v1.12.1 (``vmm/firecracker/binaries.py`` pins that version).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from remotecli.errors import VmError

#: A response head is a status line and a few headers; bodies are small JSON.
MAX_RESPONSE = 1 << 20
API_TIMEOUT = 10.0
#: Snapshot create writes all guest memory to disk: allow for a slow disk.
SNAPSHOT_TIMEOUT = 120.0


class FirecrackerApiError(VmError):
    """Firecracker refused a request (or its socket did not answer)."""

    code = "firecracker_api_error"

    def __init__(
        self, method: str, path: str, status: int | None, fault: str, body: Any = None
    ) -> None:
        self.method = method
        self.path = path
        self.status = status
        self.fault_message = fault
        self.body = body
        what = f"answered {status}" if status is not None else "failed"
        sent = f" (we sent {json.dumps(body)})" if body is not None else ""
        super().__init__(f"Firecracker API {method} {path} {what}: {fault}{sent}")

    def to_dict(self) -> dict[str, Any]:
        return {
            **super().to_dict(),
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "faultMessage": self.fault_message,
        }


@dataclass
class ApiClient:
    socket: Path
    timeout: float = API_TIMEOUT
    #: (method, path, body) of every request, in order.
    sent: list[tuple[str, str, Any]] = field(default_factory=list)

    async def request(
        self, method: str, path: str, body: Any = None, *, timeout: float | None = None
    ) -> Any:
        """Send one request; return the decoded JSON body (None for 204); raise on >= 300."""
        self.sent.append((method, path, body))
        payload = b"" if body is None else json.dumps(body).encode()
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        )
        try:
            async with asyncio.timeout(timeout or self.timeout):
                status, data = await self._exchange(head.encode() + payload)
        except TimeoutError:
            raise FirecrackerApiError(
                method, path, None, f"no answer within {timeout or self.timeout} s", body
            ) from None
        except OSError as exc:
            raise FirecrackerApiError(
                method, path, None, f"cannot reach {self.socket}: {exc.strerror or exc}", body
            ) from exc
        decoded: Any = None
        if data:
            try:
                decoded = json.loads(data)
            except ValueError:
                decoded = data.decode(errors="replace")
        if status >= 300:
            fault = decoded.get("fault_message") if isinstance(decoded, dict) else None
            raise FirecrackerApiError(method, path, status, str(fault or decoded), body)
        return decoded

    async def _exchange(self, raw: bytes) -> tuple[int, bytes]:
        reader, writer = await asyncio.open_unix_connection(str(self.socket))
        try:
            writer.write(raw)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            if length > MAX_RESPONSE:
                raise OSError(f"response body of {length} bytes")
            data = await reader.readexactly(length) if length else b""
            return status, data
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            raise OSError(f"malformed HTTP response: {exc}") from exc
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def put(self, path: str, body: Any, *, timeout: float | None = None) -> Any:
        return await self.request("PUT", path, body, timeout=timeout)

    async def patch(self, path: str, body: Any) -> Any:
        return await self.request("PATCH", path, body)

    async def get(self, path: str) -> Any:
        return await self.request("GET", path)

    # -- readiness of the API itself ----------------------------------------------

    async def wait_until_up(self, timeout: float, alive: Callable[[], bool] | None = None) -> float:
        """Poll ``GET /`` until it answers; return the seconds waited.

        ``alive`` (a callable) stops the wait early when the process died.
        Firecracker binds the socket ~10 ms after exec; the loop polls every 5 ms.
        """
        start = time.monotonic()
        last = "not tried"
        while time.monotonic() - start < timeout:
            if alive is not None and not alive():
                raise VmError(f"Firecracker exited before its API socket answered ({last})")
            try:
                await self._exchange(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                return time.monotonic() - start
            except OSError as exc:
                last = str(exc.strerror or exc)
            await asyncio.sleep(0.005)
        raise VmError(
            f"Firecracker's API socket {self.socket} did not answer in {timeout} s: {last}"
        )

    # -- the requests we make, one method each ------------------------------------

    async def machine_config(self, *, vcpus: int, memory_mib: int) -> None:
        await self.put("/machine-config", {"vcpu_count": vcpus, "mem_size_mib": memory_mib})

    async def boot_source(self, kernel: Path, boot_args: str, initrd: Path | None = None) -> None:
        body: dict[str, Any] = {"kernel_image_path": str(kernel), "boot_args": boot_args}
        if initrd is not None:
            body["initrd_path"] = str(initrd)
        await self.put("/boot-source", body)

    async def drive(
        self, drive_id: str, path: Path, *, root: bool = False, read_only: bool = False
    ) -> None:
        await self.put(
            f"/drives/{drive_id}",
            {
                "drive_id": drive_id,
                "path_on_host": str(path),
                "is_root_device": root,
                "is_read_only": read_only,
            },
        )

    async def vsock(self, uds: Path, guest_cid: int) -> None:
        await self.put("/vsock", {"guest_cid": guest_cid, "uds_path": str(uds)})

    async def network_interface(self, iface_id: str, tap: str, guest_mac: str) -> None:
        await self.put(
            f"/network-interfaces/{iface_id}",
            {"iface_id": iface_id, "host_dev_name": tap, "guest_mac": guest_mac},
        )

    async def logger(self, log_path: Path, level: str = "Info") -> None:
        await self.put("/logger", {"log_path": str(log_path), "level": level})

    async def instance_start(self) -> None:
        await self.put("/actions", {"action_type": "InstanceStart"})

    async def pause(self) -> None:
        await self.patch("/vm", {"state": "Paused"})

    async def resume(self) -> None:
        await self.patch("/vm", {"state": "Resumed"})

    async def snapshot_create(self, vmstate: Path, memory: Path) -> None:
        await self.put(
            "/snapshot/create",
            {"snapshot_type": "Full", "snapshot_path": str(vmstate), "mem_file_path": str(memory)},
            timeout=SNAPSHOT_TIMEOUT,
        )

    async def snapshot_load(self, vmstate: Path, memory: Path, *, resume: bool) -> None:
        await self.put(
            "/snapshot/load",
            {
                "snapshot_path": str(vmstate),
                "mem_backend": {"backend_type": "File", "backend_path": str(memory)},
                "resume_vm": resume,
            },
            timeout=SNAPSHOT_TIMEOUT,
        )

    async def instance_info(self) -> dict[str, Any]:
        """``GET /``: id, state ("Not started", "Running", "Paused"), vmm_version."""
        info = await self.get("/")
        return info if isinstance(info, dict) else {}
