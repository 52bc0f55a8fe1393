"""The controller under test, one rung of the ladder at a time, behind one ``Controller`` handle.

Each rung adds a lifecycle stage to the one below it (as firecracker's
``uvm`` → ``uvm_booted`` → ``uvm_restored``):

1. ``run_controller(settings)``: the app from the composition root
   (``remotecli.server.app.create_app``) under uvicorn in a thread, on the
   real database; services and routers as the test picks them.
2. ``vm_controller(settings)``: + the VM manager on a backend (the fake one:
   the real agent as a host process), with the VM routes.
3. ``auth_controller(settings, oauth)``: + the login flow and the
   credentials routes, the test bed's OAuth server in the agents' environment;
   ``prompt_world(settings, oauth)``: + the prompt service (every service).
4. ``tests/support/controller_process.py``: the controller as an OS process of
   its own, to SIGKILL, SIGSTOP or restart it.

The fixtures of ``tests/conftest.py`` (``controller``, ``harness``, ``world``)
are rungs 1 and 3 with default settings; a test that needs other settings, a
backend or deadlines calls the factory itself. ``Controller.call`` runs a
coroutine on the controller's own event loop, to look at the vault, the rows
and the VM manager exactly as the controller sees them.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import httpx
import uvicorn
from fastapi import APIRouter
from sqlalchemy import func, select

from remotecli.controller.api.routes import auth as auth_api
from remotecli.controller.api.routes import credentials as credentials_api
from remotecli.controller.api.routes import vms as vms_api
from remotecli.controller.api.routes.prompts import router as prompts_router
from remotecli.controller.auth import flow as auth_flow
from remotecli.controller.context import AppContext, Shutdown, Startup
from remotecli.controller.db.engine import session_scope
from remotecli.controller.db.models import (
    AuthSession,
    Credential,
    Lease,
    PromptRun,
    User,
    Vm,
    VmRole,
    VmState,
)
from remotecli.controller.fleet import manager as vm_service
from remotecli.controller.prompts import service as prompts
from remotecli.controller.settings import Settings
from remotecli.controller.vault import credentials, leases
from remotecli.server.app import create_app
from remotecli.testbed import TESTBED_URL_ENV, OAuthServer, approve_device, login
from remotecli.vmm.base import Backend, Deadlines, Phase
from tests.support.poll import NotYet, eventually
from tests.support.streams import Event, read_sse
from tests.support.user import PASSWORD, USER, answer_for

T = TypeVar("T")

#: A healthy fake agent listens in ~0.1 s; a hung one is given up on after 2 s.
FAST = Deadlines(
    {
        Phase.VMM_STARTED: 10.0,
        Phase.KERNEL_BOOTED: 30.0,
        Phase.INIT_STARTED: 30.0,
        Phase.AGENT_LISTENING: 2.0,
        Phase.AGENT_READY: 10.0,
    }
)
PROVIDERS = ["claude_code", "codex", "gemini_cli"]
#: The test bed's names for the providers (OAuthServer.expire_access_tokens etc.).
SERVER_NAME = {"claude_code": "claude", "codex": "codex", "gemini_cli": "gemini"}
#: The phases a login ends in.
ENDED = ("authenticated", "failed", "cancelled", "expired")


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


class Clients:
    """HTTP clients of one controller by who holds them: ``admin``, ``service``,
    ``user:<id>`` (tokens made at first use), None (no token) or a raw token."""

    def __init__(self, url: str, state_dir: Path) -> None:
        self.url = url
        self.state_dir = state_dir
        self.tokens: dict[str, str] = {}
        self.open: list[httpx.Client] = []

    @property
    def admin_token(self) -> str:
        return (self.state_dir / "admin.token").read_text().strip()

    def token(self, who: str) -> str:
        """The ``admin`` token, or a ``service`` / ``user:<id>`` one made once and kept
        (tokens live in the database: a restarted controller honours them)."""
        if who == "admin":
            return self.admin_token
        if who not in self.tokens:
            self.tokens[who] = new_token(self.client("admin"), who)
        return self.tokens[who]

    def client(self, token: str | None = "admin", timeout: float = 60.0) -> httpx.Client:
        headers = {}
        if token is not None:
            named = token in ("admin", "service") or token.startswith("user:")
            headers["Authorization"] = f"Bearer {self.token(token) if named else token}"
        client = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
        self.open.append(client)
        return client

    def close(self) -> None:
        for client in self.open:
            client.close()
        self.open.clear()


class ControllerApi:
    """What every rung of the ladder offers a test: the controller's API, by who calls it."""

    url: str
    settings: Settings
    clients: Clients

    @property
    def admin_token(self) -> str:
        return self.clients.admin_token

    def client(self, token: str | None = "admin", timeout: float = 60.0) -> httpx.Client:
        """A client with an ``admin``, ``service`` or ``user:<id>`` token, a raw token, or
        none (None)."""
        return self.clients.client(token, timeout)

    def token(self, who: str) -> str:
        """The ``admin`` token, or a ``service`` / ``user:<id>`` one made at first use."""
        return self.clients.token(who)

    def session(self, client: httpx.Client, session_id: str) -> dict[str, Any]:
        response = client.get(f"/api/auth/sessions/{session_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def wait_phase(
        self, client: httpx.Client, session_id: str, phases: set[str], seconds: float = 30.0
    ) -> dict[str, Any]:
        """The login's body once it reached one of ``phases``."""

        def reached() -> dict[str, Any]:
            body = self.session(client, session_id)
            assert body["phase"] in phases, body
            return body

        return eventually(f"login {session_id} to reach {sorted(phases)}", reached, seconds)

    def login(self, web: httpx.Client, user_id: str, provider: str) -> dict[str, Any]:
        """The whole login through the API: start, sign in at the test bed, paste, authenticated."""
        started = web.post("/api/auth/start", json={"userId": user_id, "provider": provider})
        assert started.status_code == 201, started.text
        session: dict[str, Any] = started.json()
        answer = answer_for(session)
        if answer is not None:
            pasted = web.post(f"/api/auth/sessions/{session['id']}/code", json=answer)
            assert pasted.status_code == 200, pasted.text
        ended = self.wait_phase(web, session["id"], {"authenticated", "failed", "cancelled"})
        assert ended["phase"] == "authenticated", f"the login did not succeed: {ended}"
        return ended


@dataclass
class Controller(ControllerApi):
    """A running in-process controller (rungs 1-3): its API, and its loop for what the API
    does not show (the vault, the rows, the VM manager, the prompt service)."""

    url: str
    settings: Settings
    context: AppContext
    loop: asyncio.AbstractEventLoop
    clients: Clients
    #: The test bed the agents sign in at (rungs 3 and up).
    testbed: OAuthServer | None = None
    users: list[str] = field(default_factory=list)

    @property
    def oauth(self) -> OAuthServer:
        assert self.testbed is not None, "this controller runs without the test bed (rung 1-2)"
        return self.testbed

    # -- the API ---------------------------------------------------------------------

    def vm(self, vm_id: str) -> dict[str, Any]:
        response = self.client().get(f"/api/vms/{vm_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def add_user(self, user_id: str) -> str:
        response = self.client().post("/api/users", json={"id": user_id})
        assert response.status_code == 201, response.text
        self.users.append(user_id)
        return user_id

    def user_token(self, user_id: str) -> str:
        """A new token of user ``user_id`` (one per call)."""
        response = self.client().post("/api/tokens", json={"kind": "user", "userId": user_id})
        assert response.status_code == 201, response.text
        token: str = response.json()["token"]
        return token

    # -- reaching into the controller's loop -------------------------------------------

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        """Run ``coro`` on the controller's loop (its DB engine and VM manager live there)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def read(self, fn: Callable[[], T]) -> T:
        """Evaluate ``fn`` on the controller's loop (the manager's state changes only there)."""

        async def run() -> T:
            return fn()

        return self.call(run())

    def wait_for(self, what: str, check: Callable[[], T | None], timeout: float = 20.0) -> T:
        """Poll ``check`` (on the controller's loop) until it returns something truthy."""
        return eventually(what, lambda: self.read(check), timeout)

    @property
    def vms(self) -> vm_service.VmManager:
        return self.context.vms()

    @property
    def flows(self) -> auth_flow.AuthFlows:
        flows: auth_flow.AuthFlows = self.context.auth()
        return flows

    @property
    def service(self) -> prompts.PromptService:
        return self.context.prompts()

    def handle(self, vm_id: str) -> vm_service.VmHandle | None:
        """The VM manager's handle of ``vm_id`` (None: it holds none)."""
        return self.read(lambda: self.vms.get(vm_id))

    def pool(self, role: VmRole) -> list[str]:
        """The ids of the warm pool's READY VMs of ``role``."""
        return self.read(lambda: list(self.vms._pool[role]))

    def cli_vms(self) -> list[str]:
        return self.read(lambda: [h.vm_id for h in self.vms.handles() if h.role is VmRole.CLI])

    def agent_client(self, vm_id: str) -> httpx.Client:
        """A client of a VM's agent, from the test's thread."""
        handle = self.handle(vm_id)
        assert handle is not None, f"no VM {vm_id}"
        return httpx.Client(
            transport=httpx.HTTPTransport(uds=str(handle.instance.agent_endpoint.path)),
            base_url="http://agent",
            headers={"Authorization": f"Bearer {handle.instance.spec.agent_token}"},
            timeout=30,
        )

    def vm_row(self, vm_id: str) -> Vm:
        async def get() -> Vm:
            async with self.context.sessions() as session:
                row = await session.get(Vm, vm_id)
                assert row is not None
                return row

        return self.call(get())

    def run_row(self, run_id: str) -> PromptRun | None:
        async def read() -> PromptRun | None:
            async with self.context.sessions() as session:
                return await session.get(PromptRun, run_id)

        return self.call(read())

    def counts(self) -> dict[str, int]:
        """Rows per table of the login flow, and the VMs the manager still holds."""

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

    # -- users and their credentials ---------------------------------------------------

    def connect(self, user_id: str, provider: str) -> Credential:
        """The real login flow: start it, sign in at the test bed, paste what it shows.

        Codex signs in with a device code: its browser flow listens on the
        fixed port 1455 of the host's loopback (the fake backend's VMs share
        it), which another test run on the same host may hold.
        """
        client = self.client("service")
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
        ended = self.wait_phase(client, session["id"], set(ENDED), 20)
        assert ended["phase"] == "authenticated", ended
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

    # -- prompts -----------------------------------------------------------------------

    def prompt(self, user_id: str, provider: str, prompt: str, **extra: Any) -> list[Event]:
        body = {"userId": user_id, "provider": provider, "prompt": prompt, **extra}
        with self.client("service").stream("POST", "/api/prompts", json=body) as response:
            assert response.status_code == 200, response.read()
            assert response.headers["content-type"].startswith("text/event-stream")
            return read_sse(response)

    def perspectives(self, user_id: str, providers: list[str], prompt: str) -> list[Event]:
        body = {"userId": user_id, "providers": providers, "prompt": prompt}
        with self.client("service").stream("POST", "/api/perspectives", json=body) as response:
            assert response.status_code == 200, response.read()
            return read_sse(response)


# -- rung 1: the app --------------------------------------------------------------------------


@contextlib.contextmanager
def run_controller(
    settings: Settings,
    *,
    startup: list[Startup] | None = None,
    shutdown: list[Shutdown] | None = None,
    routers: list[APIRouter] | None = None,
    oauth: OAuthServer | None = None,
) -> Iterator[Controller]:
    """The app (``startup``/``shutdown`` replace its services) under uvicorn in a thread."""
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
    listener = server.servers[0]
    url = f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}"
    clients = Clients(url, settings.state_dir)
    # The context is made in the lifespan; the loop is the one serving (uvicorn's thread).
    context: AppContext = app.state.context
    running = Controller(url, settings, context, listener.get_loop(), clients, oauth)
    try:
        yield running
    finally:
        clients.close()
        server.should_exit = True
        thread.join(30)


# -- rung 2: + the VM manager -----------------------------------------------------------------


@contextlib.contextmanager
def vm_controller(
    settings: Settings,
    *,
    backend: Backend | None = None,
    image_rootfs: Path | None = None,
    deadlines: Deadlines | None = FAST,
    pool_backoff: tuple[float, float] = (1.0, 60.0),
) -> Iterator[Controller]:
    """The controller with its VM manager (``controller/fleet``) and the VM routes."""
    start = partial(
        vm_service.start_service, backend=backend, image_rootfs=image_rootfs,
        deadlines=deadlines, pool_backoff=pool_backoff,
    )  # fmt: skip
    with run_controller(
        settings, startup=[start], shutdown=[vm_service.stop_service], routers=[vms_api.router]
    ) as running:
        yield running


# -- rung 3: + logins (and prompts) ---------------------------------------------------------


@contextlib.contextmanager
def auth_controller(
    settings: Settings,
    oauth: OAuthServer,
    *,
    backend: Backend | None = None,
    image_rootfs: Path | None = None,
    deadlines: Deadlines | None = FAST,
) -> Iterator[Controller]:
    """The controller with the VM manager, the login flow and the credentials routes, the
    test bed in the agents' environment."""
    start_vms = partial(
        vm_service.start_service,
        backend=backend,
        image_rootfs=image_rootfs,
        deadlines=deadlines,
        agent_env={TESTBED_URL_ENV: oauth.url},
    )
    with run_controller(
        settings,
        startup=[start_vms, auth_flow.start_service],
        # Stopped in reverse: the logins end (and release their VMs) before the manager stops.
        shutdown=[vm_service.stop_service, auth_flow.stop_service],
        routers=[auth_api.router, credentials_api.router],
        oauth=oauth,
    ) as running:
        yield running


@contextlib.contextmanager
def prompt_world(settings: Settings, oauth: OAuthServer) -> Iterator[Controller]:
    """The controller with VMs, logins and prompts (``settings.state_dir`` must be short)."""
    start_vms = partial(vm_service.start_service, agent_env={TESTBED_URL_ENV: oauth.url})
    with run_controller(
        settings,
        startup=[start_vms, auth_flow.start_service, prompts.start_service],
        shutdown=[vm_service.stop_service, auth_flow.stop_service, prompts.stop_service],
        routers=[auth_api.router, prompts_router],
        oauth=oauth,
    ) as running:
        # Made at once, as the web product holds one from its start.
        made = running.client().post("/api/tokens", json={"kind": "service"})
        assert made.status_code == 201, made.text
        running.clients.tokens["service"] = made.json()["token"]
        yield running


@contextlib.contextmanager
def short_state(settings: Settings) -> Iterator[Settings]:
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


# -- what a VM test leaves ----------------------------------------------------------------------


async def reap_all(root: Path) -> list[str]:
    """Reap whatever a test left under ``root`` (fake and nspawn backends); return what was."""
    from remotecli.vmm.fake.backend import FakeBackend
    from remotecli.vmm.nspawn.backend import NspawnBackend

    left: list[str] = []
    for name, make in (("fake", FakeBackend), ("nspawn", NspawnBackend)):
        backend = make(root / name)
        for instance_id in await backend.list_running():
            left.append(f"{name}/{instance_id}")
            await backend.reap(instance_id)
    return left
