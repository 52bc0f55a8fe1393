"""Run the real controller (uvicorn, real database) in a thread for a test."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import APIRouter

from remotecli.controller.context import Shutdown, Startup
from remotecli.controller.settings import Settings
from remotecli.server.app import create_app
from tests.support.poll import NotYet, eventually


@dataclass
class RunningController:
    url: str
    settings: Settings
    admin_token: str
    clients: list[httpx.Client] = field(default_factory=list)

    def client(self, token: str | None = "admin", timeout: float = 60.0) -> httpx.Client:
        headers = {}
        token = self.admin_token if token == "admin" else token
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        client = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
        self.clients.append(client)
        return client


def new_token(admin: httpx.Client, who: str) -> str:
    """A new ``service`` or ``user:<id>`` token made with an admin client (the user is created)."""
    if who == "service":
        body: dict[str, Any] = {"kind": "service", "name": "web"}
    else:
        user_id = who.removeprefix("user:")
        admin.post("/api/users", json={"id": user_id})
        body = {"kind": "user", "userId": user_id}
    response = admin.post("/api/tokens", json=body)
    assert response.status_code == 201, response.text
    token: str = response.json()["token"]
    return token


@contextlib.contextmanager
def run_controller(
    settings: Settings,
    *,
    startup: list[Startup] | None = None,
    shutdown: list[Shutdown] | None = None,
    routers: list[APIRouter] | None = None,
) -> Iterator[RunningController]:
    app = create_app(settings, startup=startup, shutdown=shutdown, routers=routers)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()

    def started() -> bool:
        if not thread.is_alive():
            raise RuntimeError("the controller exited during start-up (see the log above)")
        return bool(server.started)

    try:
        eventually("the controller to start", started, 60, interval=0.01)
    except NotYet:
        raise RuntimeError("the controller did not start within 60 s") from None
    port = server.servers[0].sockets[0].getsockname()[1]
    token = Path(settings.state_dir / "admin.token").read_text().strip()
    running = RunningController(f"http://127.0.0.1:{port}", settings, token)
    try:
        yield running
    finally:
        for client in running.clients:
            client.close()
        server.should_exit = True
        thread.join(30)
