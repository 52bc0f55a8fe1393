"""The real controller (uvicorn in a thread, every service) for the benches, and its admin token.

A bench's own copy of what the tests do in ``tests/support/controller.py``:
bench/ does not import from tests/.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from remotecli.controller.settings import Settings
from remotecli.server.app import create_app


@dataclass(frozen=True)
class Controller:
    url: str
    admin_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}


@contextlib.contextmanager
def serve(settings: Settings, start_seconds: float = 600.0) -> Iterator[Controller]:
    """Start the controller (its services: demo test bed, VMs, logins, prompts); stop it after.

    ``start_seconds`` is generous: on a VM backend the first start may build the
    golden image or snapshot before the server answers.
    """
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=0, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + start_seconds
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the controller exited during start-up (see its log above)")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the controller did not start within {start_seconds:.0f} s")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    token = Path(settings.state_dir / "admin.token").read_text().strip()
    try:
        yield Controller(f"http://127.0.0.1:{port}", token)
    finally:
        # The services stop in reverse: logins and runs end, then every VM is destroyed.
        server.should_exit = True
        thread.join(120)
