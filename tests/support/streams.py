"""Reading the controller's server-sent events: a whole answer, or a login's stream live."""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx

Event = tuple[str, dict[str, Any]]


def read_sse(response: httpx.Response) -> list[Event]:
    events: list[Event] = []
    name = "message"
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            events.append((name, json.loads(line.removeprefix("data: "))))
            name = "message"
    return events


def names(events: list[Event]) -> list[str]:
    return [name for name, _ in events]


def text_of(events: list[Event]) -> str:
    return "".join(d["text"] for n, d in events if n == "text" and not d["thinking"])


def only(events: list[Event], name: str) -> dict[str, Any]:
    found = [d for n, d in events if n == name]
    assert len(found) == 1, (name, events)
    return found[0]


class EventReader:
    """Reads an SSE stream in a thread: the ``session`` events' data, and comments seen.

    Returns once the first event arrived, so what the test does next is seen
    as a change (not missed by a stream that connected late).
    """

    def __init__(self, client: httpx.Client, path: str) -> None:
        self.events: list[dict[str, Any]] = []
        self.comments: list[str] = []
        self.status: int | None = None
        self.content_type: str | None = None
        self.done = threading.Event()
        self._first = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(client, path), daemon=True)
        self._thread.start()
        assert self._first.wait(20), "the stream sent no first event within 20 s"

    def _run(self, client: httpx.Client, path: str) -> None:
        try:
            with client.stream("GET", path, timeout=httpx.Timeout(60.0)) as response:
                self.status = response.status_code
                self.content_type = response.headers.get("content-type")
                event = None
                for line in response.iter_lines():
                    if line.startswith(":"):
                        self.comments.append(line)
                    elif line.startswith("event: "):
                        event = line.removeprefix("event: ")
                    elif line.startswith("data: ") and event == "session":
                        self.events.append(json.loads(line.removeprefix("data: ")))
                        self._first.set()
        finally:
            self._first.set()
            self.done.set()

    def wait(self, seconds: float = 30.0) -> list[dict[str, Any]]:
        assert self.done.wait(seconds), f"the stream did not end; events so far: {self.phases()}"
        return self.events

    def phases(self) -> list[str]:
        return [e["phase"] for e in self.events]


def prompt_text(web: httpx.Client, user: str, provider: str, prompt: str) -> str:
    """Run a prompt through the controller; the answer's text from its SSE stream."""
    text = ""
    with web.stream(
        "POST", "/api/prompts", json={"userId": user, "provider": provider, "prompt": prompt}
    ) as response:
        assert response.status_code == 200, response.read()
        event = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: ") and event == "text":
                data = json.loads(line.removeprefix("data: "))
                text += "" if data.get("thinking") else data["text"]
    return text
