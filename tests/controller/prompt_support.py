"""The prompt tests' world: a real controller with CLI VMs on the fake backend, the test bed, users.

``PromptWorld`` runs the controller (uvicorn in a thread, a real database)
with the real VM manager (fake backend: the real agent as a host process,
the test bed's fake CLIs), the login flow and the prompt service; users
connect their providers through the real login flow
(``POST /api/auth/start`` → sign in at the test bed → paste the code). It
reaches into the controller's event loop for what the API does not show
(the vault, the leases, the VM manager) and reads SSE.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import tempfile
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import httpx

from remotecli.controller.api.routes import auth as auth_api
from remotecli.controller.api.routes.prompts import router as prompts_router
from remotecli.controller.auth import flow as auth_flow
from remotecli.controller.context import AppContext
from remotecli.controller.db.engine import session_scope
from remotecli.controller.db.models import Credential, Lease, PromptRun, VmRole
from remotecli.controller.fleet import manager as vm_service
from remotecli.controller.prompts import service as prompts
from remotecli.controller.settings import Settings
from remotecli.controller.vault import credentials, leases
from remotecli.testbed import TESTBED_URL_ENV, OAuthServer, approve_device, login
from tests.conftest import PASSWORD, USER
from tests.controller.harness import RunningController, run_controller
from tests.support.poll import eventually

T = TypeVar("T")
PROVIDERS = ["claude_code", "codex", "gemini_cli"]
#: The test bed's names for the providers (OAuthServer.expire_access_tokens etc.).
SERVER_NAME = {"claude_code": "claude", "codex": "codex", "gemini_cli": "gemini"}

Event = tuple[str, dict[str, Any]]


@dataclass
class PromptWorld:
    controller: RunningController
    oauth: OAuthServer
    context: AppContext
    loop: asyncio.AbstractEventLoop
    service_token: str = ""
    users: list[str] = field(default_factory=list)

    # -- reaching into the controller's loop -------------------------------------

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    @property
    def vms(self) -> vm_service.VmManager:
        return self.context.vms()

    @property
    def service(self) -> prompts.PromptService:
        return self.context.prompts()

    def vm(self, vm_id: str) -> vm_service.VmHandle | None:
        async def get() -> vm_service.VmHandle | None:
            return self.vms.get(vm_id)

        return self.call(get())

    def cli_vms(self) -> list[str]:
        async def ids() -> list[str]:
            return [h.vm_id for h in self.vms.handles() if h.role is VmRole.CLI]

        return self.call(ids())

    def agent_client(self, vm_id: str) -> httpx.Client:
        """A client of a CLI VM's agent, from the test's thread."""
        handle = self.vm(vm_id)
        assert handle is not None, f"no VM {vm_id}"
        return httpx.Client(
            transport=httpx.HTTPTransport(uds=str(handle.instance.agent_endpoint.path)),
            base_url="http://agent",
            headers={"Authorization": f"Bearer {handle.instance.spec.agent_token}"},
            timeout=30,
        )

    # -- users and their credentials ------------------------------------------------

    def client(self, token: str | None = None, timeout: float = 60.0) -> httpx.Client:
        return self.controller.client(token if token is not None else self.service_token, timeout)

    def add_user(self, user_id: str) -> str:
        response = self.controller.client().post("/api/users", json={"id": user_id})
        assert response.status_code == 201, response.text
        self.users.append(user_id)
        return user_id

    def user_token(self, user_id: str) -> str:
        response = self.controller.client().post(
            "/api/tokens", json={"kind": "user", "userId": user_id}
        )
        assert response.status_code == 201, response.text
        token: str = response.json()["token"]
        return token

    def connect(self, user_id: str, provider: str) -> Credential:
        """The real login flow: start it, sign in at the test bed, paste what it shows.

        Codex signs in with a device code: its browser flow listens on the
        fixed port 1455 of the host's loopback (the fake backend's VMs share
        it), which another test run on the same host may hold.
        """
        client = self.client()
        body: dict[str, str] = {"userId": user_id, "provider": provider}
        if provider == "codex":
            body["mode"] = "device_code"
        started = client.post("/api/auth/start", json=body)
        assert started.status_code == 201, started.text
        session = started.json()
        if session["mode"] == "device_code":
            approve_device(session["loginUrl"], session["userCode"], USER, PASSWORD)
        else:
            outcome = login(session["loginUrl"], USER, PASSWORD)
            submitted = client.post(
                f"/api/auth/sessions/{session['id']}/code", json={"code": outcome.code}
            )
            assert submitted.status_code == 200, submitted.text

        def ended() -> dict[str, Any]:
            body: dict[str, Any] = client.get(f"/api/auth/sessions/{session['id']}").json()
            assert body["phase"] in ("authenticated", "failed", "cancelled", "expired"), body
            return body

        body = eventually(f"login {session['id']} to end", ended, 20)
        assert body["phase"] == "authenticated", body
        record = self.current(user_id, provider)
        assert record is not None
        return record

    def store_api_key(self, user_id: str, provider: str, key: str) -> Credential:
        async def store() -> Credential:
            async with session_scope(self.context.sessions) as session:
                return await credentials.store_api_key(
                    session, self.context.vault, user_id, provider, key
                )

        return self.call(store())

    def lease(self, user_id: str, provider: str) -> Lease | None:
        async def read() -> Lease | None:
            async with self.context.sessions() as session:
                return await leases.get(session, user_id, provider, lock=False)

        return self.call(read())

    def current(self, user_id: str, provider: str) -> Credential | None:
        async def read() -> Credential | None:
            async with self.context.sessions() as session:
                return await credentials.current(session, user_id, provider)

        return self.call(read())

    def files(self, record: Credential) -> dict[str, str]:
        return {f.path: f.content for f in credentials.open_files(self.context.vault, record)}

    def run_row(self, run_id: str) -> PromptRun | None:
        async def read() -> PromptRun | None:
            async with self.context.sessions() as session:
                return await session.get(PromptRun, run_id)

        return self.call(read())

    # -- prompts ---------------------------------------------------------------------

    def prompt(self, user_id: str, provider: str, prompt: str, **extra: Any) -> list[Event]:
        body = {"userId": user_id, "provider": provider, "prompt": prompt, **extra}
        with self.client().stream("POST", "/api/prompts", json=body) as response:
            assert response.status_code == 200, response.read()
            assert response.headers["content-type"].startswith("text/event-stream")
            return read_sse(response)

    def perspectives(self, user_id: str, providers: list[str], prompt: str) -> list[Event]:
        body = {"userId": user_id, "providers": providers, "prompt": prompt}
        with self.client().stream("POST", "/api/perspectives", json=body) as response:
            assert response.status_code == 200, response.read()
            return read_sse(response)


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


def quick_oauth_server() -> OAuthServer:
    """The test bed with a short device-code polling interval (the default 5 s would
    make every Codex device login in these tests take 5 s)."""
    return OAuthServer(device_interval=0.05)


@contextlib.contextmanager
def short_state_dir(settings: Settings) -> Iterator[Settings]:
    """``settings`` with a state dir short enough for the VMs' agent sockets.

    A Unix socket path holds 107 bytes and the fake backend puts each VM's
    socket under the state dir: pytest's tmp_path (with the test's name) is
    too deep.
    """
    short = Path(tempfile.mkdtemp(prefix="rcli-"))
    try:
        yield settings.model_copy(update={"state_dir": short / "state"})
    finally:
        shutil.rmtree(short, ignore_errors=True)


@contextlib.contextmanager
def prompt_world(settings: Settings, oauth: OAuthServer) -> Iterator[PromptWorld]:
    """The controller with VMs, logins and prompts (``settings.state_dir`` must be short)."""
    captured: dict[str, Any] = {}

    async def capture(context: AppContext) -> None:
        captured["context"] = context
        captured["loop"] = asyncio.get_running_loop()

    start_vms = partial(vm_service.start_service, agent_env={TESTBED_URL_ENV: oauth.url})
    with run_controller(
        settings,
        startup=[start_vms, auth_flow.start_service, prompts.start_service, capture],
        shutdown=[vm_service.stop_service, auth_flow.stop_service, prompts.stop_service],
        routers=[auth_api.router, prompts_router],
    ) as running:
        world = PromptWorld(running, oauth, captured["context"], captured["loop"])
        response = running.client().post("/api/tokens", json={"kind": "service"})
        world.service_token = response.json()["token"]
        yield world
