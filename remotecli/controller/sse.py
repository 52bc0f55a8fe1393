"""Server-sent events for prompt runs: a channel the runs write to, a response that reads it.

The runs are tasks of their own, not the response's: when the client hangs
up, Starlette cancels the response while the runs still have to cancel the
CLI in the agent, drain its last events and sync the credentials back. So
the response only *reads* a queue, and on hang-up it calls ``on_hang_up``
(synchronously: awaiting in a cancelled task is not reliable) and leaves.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi.responses import StreamingResponse

#: Proxies and load balancers drop connections silent for ~60 s; a CLI may
#: think or run a tool for longer without printing anything.
KEEPALIVE_SECONDS = 15.0


def encode(event: str, data: dict[str, Any]) -> bytes:
    """One SSE message: ``event: <name>`` and its JSON on one ``data:`` line."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class Channel:
    """An unbounded queue of SSE messages, closed once by whoever owns the stream."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.closed = False

    def emit(self, event: str, data: dict[str, Any]) -> None:
        if not self.closed:
            self._queue.put_nowait(encode(event, data))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._queue.put_nowait(None)

    async def messages(
        self, *, on_hang_up: Callable[[], None], keepalive: float = KEEPALIVE_SECONDS
    ) -> AsyncIterator[bytes]:
        finished = False
        try:
            while True:
                try:
                    item = await asyncio.wait_for(self._queue.get(), keepalive)
                except TimeoutError:
                    yield b": keepalive\n\n"
                    continue
                if item is None:
                    finished = True
                    return
                yield item
        finally:
            if not finished:
                on_hang_up()


def response(channel: Channel, *, on_hang_up: Callable[[], None]) -> StreamingResponse:
    return StreamingResponse(
        channel.messages(on_hang_up=on_hang_up),
        media_type="text/event-stream",
        # no-cache: never replay a run; X-Accel-Buffering: nginx would hold events back.
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
