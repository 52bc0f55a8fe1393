"""Helpers for the login-flow tests: the controller with its VM manager, the user at a browser.

``auth_controller`` runs the real controller (uvicorn, real DB) with the
login and credentials routers, the real VM manager (``controller/vms.py``)
on the fake backend (the real agent process with the test bed's fake CLIs)
or on nspawn, and the test bed's OAuth server in the agents' environment.
``Harness.call`` runs a coroutine on the controller's own event loop, to look
at the vault, the VM rows and the VM manager exactly as the controller sees them.

Test modules bind the VM tests' fixtures (a short state dir that must be left
empty, settings for the fake backend): ``state_dir = vm_harness.state_dir``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import httpx
from sqlalchemy import func, select

from remotecli.controller.api.routes import auth as auth_api
from remotecli.controller.api.routes import credentials as credentials_api
from remotecli.controller.auth import flow as auth_flow
from remotecli.controller.context import AppContext
from remotecli.controller.db.models import AuthSession, Credential, User, Vm, VmState
from remotecli.controller.fleet import manager as vms
from remotecli.controller.fleet.manager import VmManager
from remotecli.controller.settings import Settings
from remotecli.testbed import TESTBED_URL_ENV, OAuthServer, approve_device, login
from remotecli.vmm.base import Backend, Deadlines
from tests.conftest import PASSWORD, USER
from tests.controller.harness import RunningController, new_token, run_controller
from tests.controller.vm_harness import FAST
from tests.support.poll import eventually

T = TypeVar("T")


# -- the controller under test --------------------------------------------------------------


@dataclass
class Harness:
    running: RunningController
    server: OAuthServer
    context: AppContext
    loop: asyncio.AbstractEventLoop
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def vms(self) -> VmManager:
        return self.context.vms()

    @property
    def flows(self) -> auth_flow.AuthFlows:
        flows: auth_flow.AuthFlows = self.context.auth()
        return flows

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run ``coro`` on the controller's loop (its DB engine and VM manager live there)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def read(self, fn: Callable[[], T]) -> T:
        """Evaluate ``fn`` on the controller's loop (the manager's state changes only there)."""

        async def run() -> T:
            return fn()

        return self.call(run())

    def client(self, who: str = "service") -> httpx.Client:
        """A client with an ``admin``, ``service`` or ``user:<id>`` token (None: no token)."""
        if who == "admin":
            return self.running.client()
        if who not in self.tokens:
            self.tokens[who] = new_token(self.running.client(), who)
        return self.running.client(self.tokens[who])

    # -- what the controller holds -----------------------------------------------------------

    def vm_row(self, vm_id: str) -> Vm:
        async def get() -> Vm:
            async with self.context.sessions() as session:
                row = await session.get(Vm, vm_id)
                assert row is not None
                return row

        return self.call(get())

    def counts(self) -> dict[str, int]:
        """Rows per table of the flow, and the VMs the manager still holds."""

        async def count() -> dict[str, int]:
            async with self.context.sessions() as session:
                out = {}
                for name, table in (
                    ("sessions", AuthSession),
                    ("credentials", Credential),
                    ("vms", Vm),
                    ("users", User),
                ):
                    out[name] = int(
                        await session.scalar(select(func.count()).select_from(table)) or 0
                    )
                live_vms = await session.scalar(
                    select(func.count())
                    .select_from(Vm)
                    .where(Vm.state.not_in([VmState.STOPPED.value, VmState.FAILED.value]))
                )
                out["live_vms"] = int(live_vms or 0)
            out["handles"] = len(self.vms.handles())
            return out

        return self.call(count())

    def wait_for(
        self, client: httpx.Client, session_id: str, phases: set[str], seconds: float = 30.0
    ) -> dict[str, Any]:
        def reached() -> dict[str, Any]:
            body: dict[str, Any] = client.get(f"/api/auth/sessions/{session_id}").json()
            assert body["phase"] in phases, body
            return body

        return eventually(f"login {session_id} to reach {sorted(phases)}", reached, seconds)


@contextlib.contextmanager
def auth_controller(
    settings: Settings,
    server: OAuthServer,
    *,
    backend: Backend | None = None,
    image_rootfs: Path | None = None,
    deadlines: Deadlines | None = FAST,
) -> Iterator[Harness]:
    holder: dict[str, Any] = {}

    async def capture(context: AppContext) -> None:
        holder["context"] = context
        holder["loop"] = asyncio.get_running_loop()

    start_vms = partial(
        vms.start_service,
        backend=backend,
        image_rootfs=image_rootfs,
        deadlines=deadlines,
        agent_env={TESTBED_URL_ENV: server.url},
    )
    with run_controller(
        settings,
        startup=[capture, start_vms, auth_flow.start_service],
        # Stopped in reverse: the logins end (and release their VMs) before the manager stops.
        shutdown=[vms.stop_service, auth_flow.stop_service],
        routers=[auth_api.router, credentials_api.router],
    ) as running:
        yield Harness(running, server, holder["context"], holder["loop"])


# -- the user at a browser -----------------------------------------------------------------


def answer_for(session: dict[str, Any]) -> dict[str, str] | None:
    """Sign in at the session's URL as the test bed's user; return what the user pastes."""
    if session["mode"] == "device_code":
        approve_device(session["loginUrl"], session["userCode"], USER, PASSWORD)
        return None
    outcome = login(session["loginUrl"], USER, PASSWORD)
    if session["mode"] == "localhost_callback":
        assert outcome.redirect_url is not None
        return {"callbackUrl": outcome.redirect_url}
    assert outcome.code is not None
    return {"code": outcome.code}


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


# -- a controller that crashes in the middle of a login (in a child process) ------------------

CHILD_ENV = "RCLI_TEST_AUTH_CHILD"
REPO = Path(__file__).resolve().parents[2]


def crash_during_login(settings: Settings, server: OAuthServer, provider: str) -> dict[str, Any]:
    """Start a login in a child controller, then ``os._exit`` it while the login waits.

    What a crash leaves: the auth VM running, the session row "awaiting_user".
    Returns ``{"sessionId", "vmId", "phase"}`` as the child saw them.
    """
    code = "from tests.controller.auth_support import _crash_child; _crash_child()"
    payload = {
        "settings": settings.model_dump(mode="json"),
        "url": server.url,
        "provider": provider,
    }
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=90,
        env={**os.environ, CHILD_ENV: json.dumps(payload)},
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise AssertionError(
            f"the crashing controller failed ({done.returncode}):\n{done.stderr[-4000:]}"
        )
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def _crash_child() -> None:
    payload = json.loads(os.environ[CHILD_ENV])
    asyncio.run(_crash(Settings.model_validate(payload["settings"]), payload))


async def _crash(settings: Settings, payload: dict[str, Any]) -> None:
    from remotecli.controller.auth.schemas import AuthStart
    from remotecli.controller.db.models import TokenKind
    from remotecli.controller.security import Principal
    from remotecli.server.app import create_app

    start_vms = partial(
        vms.start_service, deadlines=FAST, agent_env={TESTBED_URL_ENV: payload["url"]}
    )
    app = create_app(settings, startup=[start_vms, auth_flow.start_service])
    async with app.router.lifespan_context(app):
        flows: auth_flow.AuthFlows = app.state.context.auth()
        web = Principal(token_id="tok_child", kind=TokenKind.SERVICE, user_id=None)
        body = AuthStart.model_validate({"userId": "u-1", "provider": payload["provider"]})
        session = await flows.start(web, body)
        print(
            json.dumps({"sessionId": session.id, "vmId": session.vm_id, "phase": session.phase}),
            flush=True,
        )
        os._exit(0)  # no shutdown hooks: a crash
