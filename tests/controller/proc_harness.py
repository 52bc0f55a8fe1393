"""The real controller as an OS process of its own, so a test can SIGKILL, SIGSTOP or restart it.

``ControllerProcess(settings, testbed_url)`` runs ``python -m
tests.controller.proc_harness`` (uvicorn, the real database, the VM manager
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
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from remotecli.controller.db import engine as db
from remotecli.controller.db.models import Credential
from remotecli.controller.fleet.store import instance_id_for
from remotecli.controller.settings import Settings
from remotecli.controller.vault import credentials
from remotecli.controller.vault.cipher import Vault
from remotecli.vmm import statedir
from remotecli.vmm.base import Deadlines, Phase
from tests.controller.auth_support import answer_for
from tests.controller.harness import new_token
from tests.controller.vm_harness import REPO
from tests.support.poll import NotYet, eventually

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


class ControllerProcess:
    """One controller at a time on a fixed port; ``start`` again after ``kill`` is a restart."""

    def __init__(self, settings: Settings, testbed_url: str) -> None:
        self.settings = settings
        self.testbed_url = testbed_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._clients: list[httpx.Client] = []
        self._tokens: dict[str, str] = {}

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
                [sys.executable, "-m", "tests.controller.proc_harness"],
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
        self._close_clients()

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
            self._close_clients()

    def _close_clients(self) -> None:
        for client in self._clients:
            client.close()
        self._clients.clear()

    # -- talking to it -----------------------------------------------------------------

    @property
    def admin_token(self) -> str:
        return (self.settings.state_dir / "admin.token").read_text().strip()

    def client(self, who: str = "admin", timeout: float = 30.0) -> httpx.Client:
        """A client with an ``admin``, ``service`` or ``user:<id>`` token (made once, kept
        across restarts: tokens live in the database)."""
        client = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.token(who)}"},
            timeout=timeout,
        )  # fmt: skip
        self._clients.append(client)
        return client

    def token(self, who: str) -> str:
        """The ``admin`` token, or a ``service`` / ``user:<id>`` one made at first use."""
        if who == "admin":
            return self.admin_token
        if who not in self._tokens:
            self._tokens[who] = new_token(self.client("admin"), who)
        return self._tokens[who]

    def session(self, client: httpx.Client, session_id: str) -> dict[str, Any]:
        response = client.get(f"/api/auth/sessions/{session_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def wait_phase(
        self, client: httpx.Client, session_id: str, phases: set[str], timeout: float = 30.0
    ) -> dict[str, Any]:
        last: dict[str, Any] = {}

        def reached() -> bool:
            last.update(self.session(client, session_id))
            return last["phase"] in phases

        try:
            eventually(f"login {session_id} to reach {sorted(phases)}", reached, timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; it last said: {last}") from None
        return last

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
        self._clients.append(client)
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
