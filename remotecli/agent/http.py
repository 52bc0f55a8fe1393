"""A small HTTP/1.1 server on asyncio streams (the guest has no third-party packages).

It serves the same handler on TCP, AF_VSOCK and Unix sockets. It does exactly
what the agent API needs: Content-Length request bodies with a size cap, JSON
responses, chunked NDJSON streaming responses, keep-alive. Anything else gets
a JSON error with a code, never a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from remotecli.agent.errors import AgentError, BadRequest, PayloadTooLarge
from remotecli.agent.log import log

MAX_HEADER_BYTES = 64 * 1024
# A request line or header that takes longer than this is a stuck client.
READ_TIMEOUT = 30.0


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    #: Set by the server: resolves when the client goes away mid-stream.
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)

    def json(self) -> dict[str, Any]:
        if not self.body:
            return {}
        try:
            value = json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(f"request body is not valid JSON: {exc}", code="invalid_json") from exc
        if not isinstance(value, dict):
            raise BadRequest("request body must be a JSON object", code="invalid_json")
        return value


@dataclass
class Response:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class StreamingResponse:
    """NDJSON lines produced by ``lines``; sent with chunked transfer encoding."""

    lines: AsyncGenerator[dict[str, Any], None]
    status: int = 200


Handler = Callable[[Request], Awaitable[Response | StreamingResponse]]


class HttpServer:
    def __init__(self, handler: Handler, *, max_body: int) -> None:
        self._handler = handler
        self._max_body = max_body
        self._connections: set[asyncio.Task[None]] = set()

    async def serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            while await self._one_request(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except asyncio.CancelledError:
            # Only close_connections() cancels us, at shutdown. Ending normally
            # keeps Python 3.11's stream callback from logging the cancellation.
            pass
        finally:
            self._connections.discard(task)
            writer.close()
        with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
            await writer.wait_closed()

    async def close_connections(self) -> None:
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)

    async def _one_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Serve one request; return whether the connection stays open."""
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                await _send(writer, _error_response(BadRequest("incomplete request")), False)
            return False
        except asyncio.LimitOverrunError:
            await _send(
                writer,
                _error_response(BadRequest("request headers too large", code="headers_too_large")),
                False,
            )
            return False
        started = time.monotonic()
        try:
            request = await self._parse(head, reader)
        except AgentError as exc:
            await _send(writer, _error_response(exc), False)
            return False
        keep_alive = request.headers.get("connection", "").lower() != "close"
        try:
            response = await self._handler(request)
        except AgentError as exc:
            response = _error_response(exc)
        except Exception as exc:
            log("http.unhandled", level="error", error=type(exc).__name__, path=request.path)
            response = _error_response(AgentError("internal error in the agent; see its log"))
        if isinstance(response, StreamingResponse):
            await self._stream(request, response, reader, writer)
            keep_alive = False
            status = response.status
        else:
            await _send(writer, response, keep_alive)
            status = response.status
        # A healthy GET /health is the readiness probe and the health monitor's
        # heartbeat (several a second while a VM starts): logging each would
        # bury the console's evidence. Failed ones are logged like the rest.
        if not (request.path == "/health" and status == 200):
            log(
                "http.request",
                method=request.method,
                path=request.path,  # never the query: it may carry ids worth keeping private
                status=status,
                ms=round((time.monotonic() - started) * 1000, 1),
            )
        return keep_alive

    async def _parse(self, head: bytes, reader: asyncio.StreamReader) -> Request:
        try:
            text = head.decode("latin-1")
            request_line, *header_lines = text.split("\r\n")
            method, target, version = request_line.split(" ")
        except ValueError as exc:
            raise BadRequest("malformed request line", code="bad_request_line") from exc
        if not version.startswith("HTTP/1."):
            raise BadRequest("only HTTP/1.x is served", code="bad_http_version")
        headers: dict[str, str] = {}
        for line in header_lines:
            if not line:
                continue
            name, sep, value = line.partition(":")
            if not sep:
                raise BadRequest("malformed header line", code="bad_header")
            headers[name.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            raise BadRequest(
                "chunked request bodies are not accepted; send Content-Length",
                code="chunked_not_supported",
            )
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError as exc:
            raise BadRequest("Content-Length is not a number", code="bad_header") from exc
        if length < 0:
            raise BadRequest("Content-Length is negative", code="bad_header")
        if length > self._max_body:
            raise PayloadTooLarge(
                f"request body of {length} bytes exceeds the limit of {self._max_body} bytes",
                limit=self._max_body,
            )
        body = await asyncio.wait_for(reader.readexactly(length), READ_TIMEOUT) if length else b""
        parts = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        return Request(method.upper(), unquote(parts.path), query, headers, body)

    async def _stream(
        self,
        request: Request,
        response: StreamingResponse,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        writer.write(
            _head(
                response.status,
                {
                    "Content-Type": "application/x-ndjson",
                    "Transfer-Encoding": "chunked",
                    "Connection": "close",
                },
            )
        )

        async def watch_disconnect() -> None:
            # The client sends nothing more: EOF, or a reset when it closed
            # with our data unread, means it hung up.
            with contextlib.suppress(ConnectionError, OSError):
                await reader.read()
            request.disconnected.set()
            log("http.client_gone", path=request.path)

        watcher = asyncio.create_task(watch_disconnect())
        try:
            async for item in response.lines:
                data = json.dumps(item).encode() + b"\n"
                writer.write(b"%x\r\n%s\r\n" % (len(data), data))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        except (ConnectionError, OSError):
            request.disconnected.set()
        finally:
            watcher.cancel()
            await response.lines.aclose()


def _error_response(exc: AgentError) -> Response:
    return Response(exc.status, exc.to_dict())


def _head(status: int, headers: dict[str, str]) -> bytes:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Status"
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _send(writer: asyncio.StreamWriter, response: Response, keep_alive: bool) -> None:
    body = b"" if response.body is None else json.dumps(response.body).encode()
    headers = {
        "Content-Type": "application/json",
        "Content-Length": str(len(body)),
        "Connection": "keep-alive" if keep_alive else "close",
        **response.headers,
    }
    writer.write(_head(response.status, headers) + body)
    await writer.drain()
