"""Rung 4 of the controller ladder: the controller as an OS process of its own.

``ControllerProcess(settings, testbed_url)``, to SIGKILL, SIGSTOP or restart it, runs ``python -m
tests.support.controller_process`` (uvicorn, the real database, the VM manager
on the settings' backend, the login flow and the prompt service: what
``remotecli up`` runs minus the demo's in-process test bed, which would get a
new address on every restart while the VMs that survive keep the old one).
Its JSON log goes to ``<state_dir>/controller-<n>.log`` (one per start); a
test that fails keeps them in ``$TMPDIR/rcli-fault-logs/<test>/``.

The agents of the fake backend are processes of their own (each leads its
own process group), so killing the controller's pid alone leaves them running,
as a controller crash leaves its VMs. ``agent(instance_id)`` is a client of
one of them, with the token from the instance's run dir, for a test that
plays the part of the guest while the controller is frozen.
"""

from __future__ import annotations

import ast
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Coroutine
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from remotecli.controller.context import AppContext
from remotecli.controller.db import engine as db
from remotecli.controller.db.models import Credential, VmRole
from remotecli.controller.fleet.store import instance_id_for
from remotecli.controller.settings import Settings
from remotecli.controller.vault import credentials
from remotecli.controller.vault.cipher import Vault
from remotecli.testbed import OAuthServer
from remotecli.vmm import statedir
from remotecli.vmm.base import Deadlines, Phase
from tests.support.controller import FAST, Clients, ControllerApi
from tests.support.poll import NotYet, eventually, eventually_async
from tests.support.user import answer_for

REPO = Path(__file__).resolve().parents[2]
SETTINGS_ENV = "RCLI_TEST_PROC_SETTINGS"
TESTBED_ENV = "RCLI_TEST_PROC_TESTBED"
PORT_ENV = "RCLI_TEST_PROC_PORT"

#: Where a failed test's controller logs are kept.
LOGS = Path(tempfile.gettempdir()) / "rcli-fault-logs"

#: The fake agent listens in ~0.1 s, but two cores shared with other test runs
#: (and a controller process starting beside it) can make that seconds.
DEADLINES = Deadlines(
    {
        Phase.VMM_STARTED: 10.0,
        Phase.KERNEL_BOOTED: 30.0,
        Phase.INIT_STARTED: 30.0,
        Phase.AGENT_LISTENING: 15.0,
        Phase.AGENT_READY: 15.0,
    }
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ControllerProcess(ControllerApi):
    """One controller at a time on a fixed port; ``start`` again after ``kill`` is a restart."""

    def __init__(self, settings: Settings, testbed_url: str) -> None:
        self.settings = settings
        self.testbed_url = testbed_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        # Tokens are kept across restarts (they live in the database), clients are not.
        self.clients = Clients(self.url, settings.state_dir)

    def __enter__(self) -> ControllerProcess:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        if kind is not None:
            self.save_logs()
        self.stop()

    def save_logs(self) -> Path:
        """Copy every start's log to ``LOGS/<test>/`` (the state dir goes with the test)."""
        test = os.environ.get("PYTEST_CURRENT_TEST", "unknown").split(" ")[0]
        dest = LOGS / re.sub(r"[^A-Za-z0-9_.-]+", "_", test)
        dest.mkdir(parents=True, exist_ok=True)
        for path in self.settings.state_dir.glob("controller-*.log"):
            shutil.copy(path, dest / path.name)
        return dest

    @property
    def log_path(self) -> Path:
        return self.settings.state_dir / f"controller-{self.starts}.log"

    def logs(self) -> str:
        """Every start's log, oldest first."""
        paths = (self.settings.state_dir / f"controller-{n}.log" for n in range(1, self.starts + 1))
        return "".join(p.read_text(errors="replace") for p in paths if p.exists())

    def start(self, timeout: float = 60.0) -> None:
        assert self.proc is None or self.proc.poll() is not None, "the controller still runs"
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        env = {
            **os.environ,
            SETTINGS_ENV: self.settings.model_dump_json(),
            TESTBED_ENV: self.testbed_url,
            PORT_ENV: str(self.port),
        }
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.support.controller_process"],
                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        try:
            self._wait_healthy(self.proc, timeout)
        except BaseException:
            self.proc.kill()  # a controller that did not come up must not outlive the test
            self.proc.wait(10)
            raise

    def _wait_healthy(self, proc: subprocess.Popen[bytes], timeout: float) -> None:
        with httpx.Client(base_url=self.url, timeout=5) as probe:

            def healthy() -> bool:
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"the controller exited ({proc.returncode}) while starting:\n"
                        + self.log_path.read_text(errors="replace")[-4000:]
                    )
                return probe.get("/api/health").status_code == 200

            try:
                eventually("/api/health", healthy, timeout, retry_on=(httpx.TransportError,))
            except NotYet as exc:
                raise AssertionError(
                    f"the controller did not answer /api/health within {timeout} s:\n"
                    + self.log_path.read_text(errors="replace")[-4000:]
                ) from exc

    @property
    def pid(self) -> int:
        assert self.proc is not None and self.proc.poll() is None, "the controller is not running"
        return self.proc.pid

    def signal(self, sig: signal.Signals) -> None:
        os.kill(self.pid, sig)

    def kill(self) -> None:
        """SIGKILL the controller alone (its VMs go on), as an OOM kill would."""
        self.signal(signal.SIGKILL)
        assert self.proc is not None
        self.proc.wait(10)
        self.clients.close()

    def stop(self, timeout: float = 30.0) -> None:
        """A clean stop (SIGTERM): the services end their logins and runs and destroy their VMs."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGCONT)  # a test may have left it frozen
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(
                f"the controller did not stop within {timeout} s of SIGTERM:\n"
                + self.log_path.read_text(errors="replace")[-4000:]
            ) from None
        finally:
            self.clients.close()

    # -- talking to it -----------------------------------------------------------------

    def prompt(self, web: httpx.Client, user_id: str, text: str) -> dict[str, Any]:
        """POST /api/prompts for Claude; the ``done`` event (status, credentials version)."""
        body = {"userId": user_id, "provider": "claude_code", "prompt": text}
        response = web.post("/api/prompts", json=body)
        assert response.status_code == 200, response.text
        data = [line for line in response.text.splitlines() if line.startswith("data: ")]
        done: dict[str, Any] = json.loads(data[-1].removeprefix("data: "))
        return done

    def sign_in_through_the_agent(self, session: dict[str, Any]) -> None:
        """The user signs in and the code reaches the agent without the controller's API.

        For a controller that is frozen or cannot answer: the test plays its part of
        step 11 (the paste) with the VM's own token; the agent then reports success
        for the controller to capture when it can.
        """
        answer = answer_for(session)
        assert answer is not None
        agent = self.agent(instance_id_for(session["vmId"]))
        (login,) = agent.get("/sessions").json()["sessions"]
        done = agent.post(
            f"/sessions/{login['sessionId']}/code", json={**answer, "waitSeconds": 20}
        )
        assert done.status_code == 200, done.text
        assert done.json()["phase"] == "authenticated", done.json()

    def wait_rotated(
        self, admin: httpx.Client, vault_files: dict[str, str], timeout: float = 30.0
    ) -> tuple[str, dict[str, str]]:
        """Wait until a CLI VM's Claude files hold another refresh token than ``vault_files``
        (its CLI refreshed); return that VM's id and files."""
        found: list[tuple[str, dict[str, str]]] = []

        def rotated() -> bool:
            # Only a VM whose agent got ready (a starting one may not listen yet).
            vms = admin.get("/api/vms").json()["vms"]
            for vm in (v for v in vms if (v["role"], v["state"]) == ("cli", "claimed")):
                agent = self.agent(instance_id_for(vm["id"]))
                held = agent.get("/credentials", params={"provider": "claude_code"}).json()
                files = {f["path"]: f["content"] for f in held.get("files") or []}
                if held.get("complete") and refresh_token_of(files) != refresh_token_of(
                    vault_files
                ):
                    found.append((vm["id"], files))
                    return True
            return False

        eventually("the CLI in the VM to rotate its refresh token", rotated, timeout)
        return found[-1]

    def reconcile_reports(self) -> list[dict[str, Any]]:
        """The reconcile reports logged at its starts (one per start that found VMs)."""
        reports = []
        for line in self.logs().splitlines():
            if line.startswith("{") and "reconciled VMs after start" in line:
                # "reconciled VMs after start: {...}": the report's repr (literals only)
                event: str = json.loads(line)["event"]
                reports.append(ast.literal_eval(event.split(": ", 1)[1]))
        return reports

    # -- what the database holds (read with the controller's own vault key) ---------------

    def vault(self, user_id: str, provider: str) -> list[tuple[int, credentials.Secret]]:
        """Every stored version of (user, provider), opened: a half-written one would not."""

        async def read() -> list[tuple[int, credentials.Secret]]:
            from sqlalchemy import select

            vault = Vault.from_file(self.settings.resolved_vault_key_file)
            engine = db.make_engine(self.settings.resolved_database_url)
            try:
                async with db.sessionmaker(engine)() as session:
                    rows = (
                        await session.execute(
                            select(Credential)
                            .where(Credential.user_id == user_id, Credential.provider == provider)
                            .order_by(Credential.version)
                        )
                    ).scalars()
                    return [(r.version, credentials.open_secret(vault, r)) for r in rows]
            finally:
                await engine.dispose()

        return asyncio.run(read())

    def vault_files(self, user_id: str, provider: str) -> list[tuple[int, dict[str, str]]]:
        """``vault`` for OAuth records: (version, {path: content})."""
        return [
            (version, {f.path: f.content for f in secret.files})
            for version, secret in self.vault(user_id, provider)
        ]

    # -- the VMs (fake backend: host processes under the state dir) ----------------------

    @property
    def fake_root(self) -> Path:
        return self.settings.state_dir / "fake"

    def instances(self) -> dict[str, int | None]:
        """The fake backend's instance dirs and their agents' pids (None: not recorded)."""
        out: dict[str, int | None] = {}
        for directory in statedir.scan(self.fake_root):
            pid = directory.read_meta().get("pid")
            out[directory.instance_id] = pid if isinstance(pid, int) else None
        return out

    def agent(self, instance_id: str) -> httpx.Client:
        """A client of that instance's agent, with the token its VM was given."""
        directory = statedir.StateDir(self.fake_root / instance_id)
        token = (directory.run / "token").read_text().strip()
        client = httpx.Client(
            transport=httpx.HTTPTransport(uds=str(directory.socket)), base_url="http://agent",
            headers={"Authorization": f"Bearer {token}"}, timeout=30,
        )  # fmt: skip
        self.clients.open.append(client)
        return client


def refresh_token_of(files: dict[str, str]) -> str:
    """Claude's refresh token in its credential files."""
    token: str = json.loads(files[".claude/.credentials.json"])["claudeAiOauth"]["refreshToken"]
    return token


def assert_no_orphans(ctl: ControllerProcess, admin: httpx.Client) -> None:
    """Every agent instance under the state dir belongs to a VM the controller lists as live."""
    live = {
        vm["id"] for vm in admin.get("/api/vms").json()["vms"]
        if vm["state"] not in ("stopped", "failed")
    }  # fmt: skip
    accounted = {instance_id_for(v) for v in live}
    strays = {i: pid for i, pid in ctl.instances().items() if i not in accounted}
    assert strays == {}, f"agent instances no live VM row accounts for: {strays} (live VMs: {live})"


# -- a controller that crashes (in a child process) ------------------------------------------

CHILD_SETTINGS = "RCLI_TEST_CONTROLLER_SETTINGS"
CHILD_LOGIN = "RCLI_TEST_AUTH_CHILD"
Plan = Callable[[AppContext], Coroutine[Any, Any, dict[str, Any]]]


def _run_child(code: str, env: dict[str, str], timeout: float) -> dict[str, Any]:
    """Run ``code`` in a child python; the JSON of its last stdout line."""
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
        timeout=timeout, env={**os.environ, **env},
    )  # fmt: skip
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise AssertionError(
            f"the crashing controller failed (exit {done.returncode}):\n{done.stderr[-4000:]}"
        )
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def crash_controller(settings: Settings, plan: str, timeout: float = 90.0) -> dict[str, Any]:
    """Run a controller in a child process, carry out ``plan`` there, then ``os._exit``.

    What a crash (OOM kill, power cut of the controller alone) leaves: VMs
    running, rows saying what they were doing. Returns the plan's JSON.
    """
    code = f"from tests.support.controller_process import child_main; child_main({plan!r})"
    return _run_child(code, {CHILD_SETTINGS: settings.model_dump_json()}, timeout)


def child_main(plan: str) -> None:
    settings = Settings.model_validate_json(os.environ[CHILD_SETTINGS])
    asyncio.run(_child(settings, PLANS[plan]))


async def _child(settings: Settings, plan: Plan) -> None:
    from remotecli.controller.fleet.manager import start_service
    from remotecli.server.app import create_app

    start = partial(start_service, deadlines=FAST if settings.backend == "fake" else None)
    app = create_app(settings, startup=[start])
    async with app.router.lifespan_context(app):
        result = await plan(app.state.context)
        print(json.dumps(result), flush=True)
        os._exit(0)  # no shutdown hooks, no cleanup: a crash


async def _until(check: Callable[[], object], timeout: float = 30.0) -> None:
    await eventually_async("the plan's condition", check, timeout)


async def _add_user(context: AppContext, user_id: str) -> None:
    from remotecli.controller.db.models import User

    async with db.session_scope(context.sessions) as session:
        session.add(User(id=user_id))


async def _plan_mixed(context: AppContext) -> dict[str, Any]:
    """A CLI VM, two auth VMs, a warm one, one mid-start and a stray instance."""
    from remotecli.vmm.base import InstanceSpec
    from remotecli.vmm.fake.backend import FakeBackend, FakeFault

    manager = context.vms()
    assert isinstance(manager.backend, FakeBackend)
    await _add_user(context, "alice")
    kept = await manager.cli_vm("alice")
    vanishing = await manager.claim(VmRole.AUTH)
    dying = await manager.claim(VmRole.AUTH)
    await _until(lambda: manager._pool[VmRole.AUTH])
    manager.backend.fail_next(FakeFault.NEVER_LISTENS)  # stays STARTING until the crash
    # CLI: no pool for that role, so this one boots (the auth pool would serve it at once)
    starting = asyncio.get_running_loop().create_task(manager.claim(VmRole.CLI))
    await _until(lambda: manager._launching)
    stray = FakeBackend(manager.backend.state_root).create(
        InstanceSpec(image=Path("/"), instance_id="stray-1", agent_token="x" * 32)
    )
    await stray.start()
    await stray.wait_ready()
    assert not starting.done()
    return {
        "kept": kept.vm_id, "vanishing": vanishing.vm_id, "dying": dying.vm_id,
        "dyingPid": getattr(dying.instance, "pid", None), "pooled": manager._pool[VmRole.AUTH][0],
        "starting": next(iter(manager._launching)), "strayPid": stray.pid,
    }  # fmt: skip


async def _plan_nspawn(context: AppContext) -> dict[str, Any]:
    """An auth VM from the pool, alice's CLI VM cold: which path each claim took."""
    manager = context.vms()
    await _add_user(context, "alice")
    await _until(lambda: manager._pool[VmRole.AUTH])
    warm = await manager.claim(VmRole.AUTH)
    cold = await manager.cli_vm("alice")
    return {"warm": warm.vm_id, "cold": cold.vm_id}


PLANS: dict[str, Plan] = {"mixed": _plan_mixed, "nspawn": _plan_nspawn}


def crash_during_login(settings: Settings, server: OAuthServer, provider: str) -> dict[str, Any]:
    """Start a login in a child controller, then ``os._exit`` it while the login waits.

    What a crash leaves: the auth VM running, the session row "awaiting_user".
    Returns ``{"sessionId", "vmId", "phase"}`` as the child saw them.
    """
    code = "from tests.support.controller_process import login_child; login_child()"
    payload = {
        "settings": settings.model_dump(mode="json"),
        "url": server.url,
        "provider": provider,
    }
    return _run_child(code, {CHILD_LOGIN: json.dumps(payload)}, 90)


def login_child() -> None:
    payload = json.loads(os.environ[CHILD_LOGIN])
    asyncio.run(_crash_login(Settings.model_validate(payload["settings"]), payload))


async def _crash_login(settings: Settings, payload: dict[str, Any]) -> None:
    from remotecli.controller.auth import flow as auth_flow
    from remotecli.controller.auth.schemas import AuthStart
    from remotecli.controller.db.models import TokenKind
    from remotecli.controller.fleet import manager as vms
    from remotecli.controller.security import Principal
    from remotecli.server.app import create_app
    from remotecli.testbed import TESTBED_URL_ENV

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


# -- the child process ----------------------------------------------------------------------


def main() -> None:
    import uvicorn

    from remotecli.controller.auth import flow as auth_flow
    from remotecli.controller.fleet import manager as vms
    from remotecli.controller.logs import configure
    from remotecli.controller.prompts import service as prompts
    from remotecli.server.app import create_app
    from remotecli.testbed import TESTBED_URL_ENV

    settings = Settings.model_validate_json(os.environ[SETTINGS_ENV])
    start_vms = partial(
        vms.start_service,
        deadlines=DEADLINES,
        agent_env={TESTBED_URL_ENV: os.environ[TESTBED_ENV]},
    )
    app = create_app(
        settings,
        startup=[start_vms, auth_flow.start_service, prompts.start_service],
        # Stopped in reverse: runs and logins end (syncing back) before the VMs go.
        shutdown=[vms.stop_service, auth_flow.stop_service, prompts.stop_service],
    )
    configure()
    port = int(os.environ[PORT_ENV])
    uvicorn.run(app, host="127.0.0.1", port=port, log_config=None, access_log=False)


if __name__ == "__main__":
    main()
