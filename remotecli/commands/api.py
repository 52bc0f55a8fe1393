"""The command line's client of the controller API (sync: this is the CLI edge).

Where to reach it and as whom: ``--url`` / ``REMOTECLI_URL`` (default
http://127.0.0.1:4000) and ``--token`` / ``REMOTECLI_TOKEN`` (default: the
admin token ``make up`` wrote to ``.run/admin.token``). The controller's
refusals become ``ApiError`` (its status and body), a controller that does not
answer ``Unreachable``: both ``RemoteCliError`` (the tree drawn in
``remotecli/errors.py``), so the CLI's one ``except`` at its edge prints them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from remotecli.errors import RemoteCliError

DEFAULT_URL = "http://127.0.0.1:4000"
DEFAULT_TOKEN_FILE = Path(".run/admin.token")


class ApiError(RemoteCliError):
    """The controller said no; ``code`` and the body are its own."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(str(body.get("message") or f"HTTP {status}"))
        self.status = status
        self.code = str(body.get("code", "error"))
        self.body = body


class Unreachable(RemoteCliError):
    code = "controller_unreachable"


@dataclass
class Api:
    url: str
    token: str | None

    @classmethod
    def from_env(cls, url: str | None, token: str | None) -> Api:
        url = url or os.environ.get("REMOTECLI_URL") or DEFAULT_URL
        token = token or os.environ.get("REMOTECLI_TOKEN")
        if token is None and DEFAULT_TOKEN_FILE.exists():
            token = DEFAULT_TOKEN_FILE.read_text().strip()
        return cls(url.rstrip("/"), token)

    def _client(self, timeout: float | None = 60.0) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            with self._client() as client:
                response = client.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise Unreachable(
                f"cannot reach the controller at {self.url} ({exc.__class__.__name__}); "
                "is it running? Start it with `make up`, or pass --url"
            ) from exc
        return _body(response)

    def text(self, path: str, **params: Any) -> str:
        try:
            with self._client() as client:
                response = client.get(path, params=params)
        except httpx.TransportError as exc:
            raise Unreachable(f"cannot reach the controller at {self.url}: {exc}") from exc
        if response.status_code >= 400:
            _body(response)
        return response.text

    def events(self, method: str, path: str, **kwargs: Any) -> Iterator[tuple[str, dict[str, Any]]]:
        """Server-sent events as (event, data) pairs until the stream ends."""
        try:
            with self._client(timeout=None) as client, client.stream(method, path, **kwargs) as r:
                if r.status_code >= 400:
                    r.read()
                    _body(r)
                event, data = "message", list[str]()
                for line in r.iter_lines():
                    if not line:
                        if data:
                            yield event, json.loads("\n".join(data))
                        event, data = "message", []
                    elif line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:"):
                        data.append(line[5:].strip())
        except httpx.TransportError as exc:
            raise Unreachable(f"lost the controller at {self.url}: {exc}") from exc


def _body(response: httpx.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        body = {"code": "bad_response", "message": response.text[:300]}
    if response.status_code >= 400:
        raise ApiError(response.status_code, body if isinstance(body, dict) else {})
    return body
