"""Replay a pasted OAuth callback URL against the CLI's own listener in this VM.

The user's browser was redirected to ``http://localhost:1455/auth/callback?
code=...&state=...`` on *their* machine, where nothing listens; they paste
that address and we deliver it to the CLI here. This is the seed's "VM proxies
callback to CLI's localhost:1455", narrowed to exactly one target: only
127.0.0.1, only the port the pending login's CLI listens on, only its path,
only with its state. Anything else is refused and nothing is sent.
"""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qs, urlsplit

from remotecli.agent.errors import BadRequest, UpstreamFailed
from remotecli.providers.base import CallbackTarget

RELAY_TIMEOUT = 15.0
MAX_CALLBACK_URL = 8192


def check_callback(url: str, target: CallbackTarget) -> str:
    """Validate ``url`` against the pending login; return the path+query to request."""
    if len(url) > MAX_CALLBACK_URL:
        raise BadRequest("callback URL is too long", code="invalid_callback_url")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise BadRequest("that is not a URL", code="invalid_callback_url") from exc
    if parts.scheme != "http" or not parts.netloc:
        raise BadRequest(
            "paste the whole address from the browser's address bar; it starts with "
            f"http://localhost:{target.port}{target.path}",
            code="invalid_callback_url",
        )
    if parts.username is not None or parts.password is not None:
        raise BadRequest(
            "callback URL must not carry credentials", code="callback_host_not_allowed"
        )
    if parts.hostname not in ("localhost", "127.0.0.1"):
        raise BadRequest(
            f"callback host {parts.hostname!r} is not this login's listener; only "
            "localhost is relayed",
            code="callback_host_not_allowed",
        )
    if port != target.port:
        raise BadRequest(
            f"callback port {port} does not match the port {target.port} the CLI listens on",
            code="callback_port_mismatch",
        )
    if parts.path != target.path:
        raise BadRequest(
            f"callback path {parts.path!r} is not the CLI's callback path {target.path!r}",
            code="callback_path_mismatch",
        )
    query = parse_qs(parts.query, keep_blank_values=True)
    if query.get("state", [None])[-1] != target.state:
        raise BadRequest(
            "the state in this URL is not from the current sign-in; start the login again "
            "and use the newest link",
            code="state_mismatch",
        )
    if not query.get("code") and not query.get("error"):
        raise BadRequest("callback URL has no code", code="invalid_callback_url")
    return f"{parts.path}?{parts.query}"


async def forward(target: CallbackTarget, path_and_query: str) -> int:
    """GET the callback from the CLI's listener on 127.0.0.1; return the HTTP status."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", target.port), RELAY_TIMEOUT
        )
    except (OSError, TimeoutError) as exc:
        raise UpstreamFailed(
            f"the CLI is no longer listening on 127.0.0.1:{target.port}; start the login again",
            code="callback_listener_gone",
        ) from exc
    try:
        writer.write(
            (
                f"GET {path_and_query} HTTP/1.1\r\nHost: localhost:{target.port}\r\n"
                "Connection: close\r\nUser-Agent: remotecli-agent\r\n\r\n"
            ).encode()
        )
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), RELAY_TIMEOUT)
        # Drain the rest so the CLI's server is not left writing to a closed socket.
        await asyncio.wait_for(reader.read(), RELAY_TIMEOUT)
    except (OSError, TimeoutError) as exc:
        raise UpstreamFailed(
            "the CLI's listener did not answer the callback", code="callback_no_answer"
        ) from exc
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass
    try:
        return int(status_line.split()[1])
    except (IndexError, ValueError) as exc:
        raise UpstreamFailed(
            "the CLI's listener sent a malformed response", code="callback_no_answer"
        ) from exc
