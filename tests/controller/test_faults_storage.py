"""Faults of the controller's storage: the database away for a while, the disk full under the vault.

The controller runs as its own process (``tests/support/controller_process.py``) with its VMs on the
fake backend and the test bed's OAuth server; users connect through the real
login flow. The faults are real: a PostgreSQL cluster of the test's own
stopped and started again (``pg_ctl``), a SQLite database locked by another
writer, the SQLite database on a small tmpfs filled to the last byte.

What must hold: every API call during the fault answers a JSON error with a
stable code and a message (503 while the database is away, 507 when the disk
is full), never a 500, a stack trace or a secret; the controller recovers by
itself once the fault ends; nothing stored before is lost or half-written.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest

from remotecli.controller.fleet.store import instance_id_for
from remotecli.controller.settings import Settings
from remotecli.testbed import OAuthServer
from tests.support.controller_process import ControllerProcess, refresh_token_of
from tests.support.pg import _as_postgres, create_database, pg_bin, throwaway_cluster
from tests.support.poll import eventually

pytestmark = pytest.mark.timeout(180)


def settings_for(state_dir: Path, database_url: str) -> Settings:
    return Settings(
        environment="test", state_dir=state_dir, database_url=database_url, backend="fake",
        warm_pool_auth=0, warm_pool_cli=0, health_interval_seconds=0.2,
    )  # fmt: skip


def assert_clear_error(
    response: httpx.Response, status: int, code: str, secrets: list[str]
) -> None:
    """A JSON error with that status and code, a message, no trace and none of ``secrets``."""
    what = f"{response.request.method} {response.request.url.path}"
    assert response.status_code == status, f"{what}: {response.status_code} {response.text}"
    assert response.headers["content-type"] == "application/json", f"{what}: {response.text}"
    body = response.json()
    assert body["code"] == code and body["message"], f"{what}: {body}"
    for bad in ("Traceback", "sqlalchemy", "psycopg", *secrets):
        assert bad not in response.text, f"{what} shows {bad[:12]}...: {response.text}"


# -- 4a. PostgreSQL away for a few seconds ----------------------------------------------------


@dataclass
class StoppableCluster:
    """A throwaway cluster of this test's own, stopped and started with its own pg_ctl."""

    base_url: str

    def __post_init__(self) -> None:
        plain = self.base_url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(f"{plain}/postgres") as conn:
            settings = {
                name: str(conn.execute(f"SHOW {name}").fetchone()[0])  # type: ignore[index]
                for name in ("data_directory", "port", "unix_socket_directories")
            }
        self.data = Path(settings["data_directory"])
        self.options = (
            f"-c listen_addresses=127.0.0.1 -p {settings['port']} "
            f"-k {settings['unix_socket_directories']} -c fsync=off"
        )
        self.password = urlsplit(self.base_url).password or ""

    def pg_ctl(self, *argv: str) -> None:
        bindir = pg_bin()
        assert bindir is not None
        try:
            _as_postgres([str(bindir / "pg_ctl"), "-D", str(self.data), *argv])
        except subprocess.CalledProcessError as exc:
            raise AssertionError(f"pg_ctl {argv[-1]} failed: {exc.stderr}") from exc

    def stop(self) -> None:
        self.pg_ctl("-m", "fast", "-w", "-t", "60", "stop")

    def start(self) -> None:
        self.pg_ctl("-o", self.options, "-w", "-t", "60", "-l", str(self.data.parent / "log"),
                    "start")  # fmt: skip

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()


@pytest.fixture
def cluster() -> Iterator[StoppableCluster]:
    with throwaway_cluster() as base_url:
        own = StoppableCluster(base_url)
        try:
            yield own
        finally:
            if not own.running():  # throwaway_cluster stops it itself
                own.start()


def test_postgresql_away_is_a_503_then_the_controller_recovers_by_itself(
    state_dir: Path, cluster: StoppableCluster, oauth_server: OAuthServer
) -> None:
    settings = settings_for(state_dir, create_database(cluster.base_url))
    with ControllerProcess(settings, oauth_server.url) as ctl:
        web, admin = ctl.client("service"), ctl.client("admin")
        ctl.login(web, "ada", "claude_code")
        ((_, first),) = ctl.vault_files("ada", "claude_code")
        secrets = [cluster.password, ctl.admin_token, ctl.token("service")]
        started = web.post("/api/auth/start", json={"userId": "ada", "provider": "gemini_cli"})
        assert started.status_code == 201, started.text
        login = started.json()
        # A run whose CLI refreshed (the vault's refresh token is spent now) is cut by its
        # client while the database is away: its sync-back and its lease's release meet
        # the outage.
        oauth_server.expire_access_tokens("claude")
        body = {"userId": "ada", "provider": "claude_code", "prompt": "hang"}
        with ctl.client("service").stream("POST", "/api/prompts", json=body) as running:
            assert running.status_code == 200, running.read()
            vm_id, on_vm = ctl.wait_rotated(admin, first)
            cluster.stop()
        # A login signed in while the database is away: the controller cannot store the
        # files, gives the login up and destroys its VM.
        ctl.sign_in_through_the_agent(login)
        login_vm = instance_id_for(login["vmId"])
        eventually("the login's VM to be destroyed", lambda: login_vm not in ctl.instances())

        outage = [
            (503, admin.get("/api/health")),
            (503, web.get("/api/users/ada/credentials")),
            (503, web.post("/api/users", json={"id": "bob"})),
            (503, web.post("/api/auth/start", json={"userId": "ada", "provider": "gemini_cli"})),
            (503, web.post("/api/prompts", json={"userId": "ada", "provider": "claude_code",
                                                  "prompt": "hello"})),
        ]  # fmt: skip
        time.sleep(1)  # the health monitor's rounds (every 0.2 s) meet the outage too
        cluster.start()
        for status, response in outage:
            assert_clear_error(response, status, "database_unavailable", secrets)

        eventually(
            "GET /api/health to answer 200", lambda: web.get("/api/health").status_code == 200
        )
        # The cut run ends by itself once the database is back (its lease released first).
        runs: list[dict[str, Any]] = []

        def run_recorded() -> bool:
            runs[:] = admin.get(f"/api/vms/{vm_id}/sessions").json()["recentRuns"]
            return [r["status"] for r in runs] == ["cancelled"]

        try:
            eventually("the cut run's end to be recorded", run_recorded)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the VM's runs: {runs}") from None
        assert ctl.vault_files("ada", "claude_code") == [(1, first)]
        # The login cut by the outage says so (it was not left open).
        ended = ctl.wait_phase(web, login["id"], {"authenticated", "failed", "cancelled"})
        assert (ended["phase"], ended["error"]["code"]) == ("failed", "database_unavailable"), ended
        assert "start a new login" in ended["error"]["message"], ended
        assert ctl.vault("ada", "gemini_cli") == []
        listed = web.get("/api/users/ada/credentials").json()
        assert [(c["provider"], c["state"]) for c in listed] == [("claude_code", "connected")]
        assert web.post("/api/users", json={"id": "bob"}).status_code == 201
        # The lease is free (no credentials_busy), and the VM's unsynced copy (the live
        # refresh token) is stored before this run uses it.
        assert ctl.prompt(web, "ada", "hello again")["status"] == "succeeded"
        versions = ctl.vault_files("ada", "claude_code")
        assert [v for v, _ in versions] == [1, 2], [v for v, _ in versions]
        assert refresh_token_of(versions[-1][1]) == refresh_token_of(on_vm)
        log = ctl.logs()
        for secret in secrets:
            assert secret not in log, "the controller's log holds a secret"


# -- 4b. SQLite busy: another writer holds the lock for a while ------------------------------


def test_a_controller_started_while_postgresql_is_down_waits_for_it(
    state_dir: Path, cluster: StoppableCluster, oauth_server: OAuthServer
) -> None:
    settings = settings_for(state_dir, create_database(cluster.base_url))
    cluster.stop()
    # PostgreSQL comes up 3 s after the controller (a machine booting both at once).
    later = threading.Timer(3.0, cluster.start)
    later.start()
    try:
        with ControllerProcess(settings, oauth_server.url) as ctl:
            assert "could not reach the database at start (database_unavailable)" in ctl.logs()
            assert cluster.password not in ctl.logs()
            web = ctl.client("service")
            assert web.post("/api/users", json={"id": "ada"}).status_code == 201
    finally:
        later.join()


def test_a_database_that_never_answers_ends_start_up_with_what_to_do(state_dir: Path) -> None:
    with contextlib.closing(socket.socket()) as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: every connect is refused
        port = closed.getsockname()[1]
        env = {
            **os.environ,
            "REMOTECLI_DATABASE_URL": f"postgresql+psycopg://rcli:hunter2@127.0.0.1:{port}/rcli",
            "REMOTECLI_DATABASE_WAIT_SECONDS": "1",
            "REMOTECLI_BACKEND": "fake",
            "REMOTECLI_STATE_DIR": str(state_dir),
            "COLUMNS": "500",  # Rich wraps at the terminal's width: keep the message one line
        }
        cli = Path(sys.executable).with_name("remotecli")
        done = subprocess.run(
            [str(cli), "up", "--port", "0"], env=env, capture_output=True, text=True, timeout=60
        )
    said = done.stdout + done.stderr
    assert done.returncode == 1, said
    assert "error (database_unavailable)" in said, said
    assert f"127.0.0.1:{port}/rcli did not answer within 1 s" in said, said
    assert "REMOTECLI_DATABASE_URL" in said, said
    for bad in ("hunter2", "Traceback", "psycopg.", "sqlalchemy."):
        assert bad not in said, f"start-up shows {bad}: {said}"


def test_a_sqlite_lock_held_for_seconds_delays_writes_and_loses_nothing(
    state_dir: Path, oauth_server: OAuthServer
) -> None:
    """SQLite has one writer at a time; the controller waits for the lock (30 s at most)."""
    database = state_dir / "remotecli.db"
    settings = settings_for(state_dir, f"sqlite+aiosqlite:///{database}")
    with ControllerProcess(settings, oauth_server.url) as ctl:
        web = ctl.client("service")
        key = {"userId": "ada", "provider": "gemini_cli", "mode": "api_key"}
        stored = web.post("/api/auth/start", json={**key, "apiKey": "AIza" + "1" * 35})
        assert stored.status_code == 201, stored.text
        answers: list[httpx.Response] = []
        with sqlite3.connect(database, isolation_level=None) as other:
            other.execute("BEGIN EXCLUSIVE")
            writes: list[tuple[str, dict[str, Any]]] = [
                ("/api/users", {"id": "bob"}),
                ("/api/auth/start", {**key, "apiKey": "AIza" + "2" * 35}),
            ]
            writers = [
                threading.Thread(target=lambda p=path, b=body: answers.append(web.post(p, json=b)))
                for path, body in writes
            ]
            for thread in writers:
                thread.start()
            time.sleep(2)  # the lock holder works for a while; the writers wait
            assert answers == [], [a.text for a in answers]
            other.execute("COMMIT")
        for thread in writers:
            thread.join(30)
        assert sorted(a.status_code for a in answers) == [201, 201], [a.text for a in answers]
        assert [(v, s.api_key) for v, s in ctl.vault("ada", "gemini_cli")] == [
            (1, "AIza" + "1" * 35), (2, "AIza" + "2" * 35),
        ]  # fmt: skip
        assert web.get("/api/users/bob").status_code == 200


# -- 5. the disk under the vault full -----------------------------------------------------------


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
                   check=True, capture_output=True, timeout=30)  # fmt: skip
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True, capture_output=True, timeout=30)


@contextlib.contextmanager
def full_disk(database: Path) -> Iterator[None]:
    """Fill the database's file system to the last byte; give the space back after.

    The write-ahead log is checkpointed and truncated first: SQLite reuses the
    log's pages after a checkpoint, so a small write could otherwise still fit.
    """
    with contextlib.closing(sqlite3.connect(database)) as conn:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    assert busy == 0, "the controller held the database: the log could not be truncated"
    filler = database.parent / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (1 << 20, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * chunk)
        free = os.statvfs(database.parent).f_bavail
        assert free == 0, f"{free} blocks still free after filling"
        yield
    finally:
        os.close(fd)
        filler.unlink()


def test_a_full_disk_under_the_vault_is_a_507_and_the_old_version_stays_whole(
    state_dir: Path, oauth_server: OAuthServer
) -> None:
    with tmpfs(state_dir / "db", "8m") as mount:
        database = mount / "remotecli.db"
        settings = settings_for(state_dir, f"sqlite+aiosqlite:///{database}")
        with ControllerProcess(settings, oauth_server.url) as ctl:
            web = ctl.client("service")
            keys = ["AIza" + str(n) * 35 for n in range(3)]

            def store(key: str) -> httpx.Response:
                body = {"userId": "ada", "provider": "gemini_cli", "mode": "api_key", "apiKey": key}
                return web.post("/api/auth/start", json=body)

            assert store(keys[0]).status_code == 201
            started = web.post("/api/auth/start", json={"userId": "ada", "provider": "claude_code"})
            assert started.status_code == 201, started.text
            login = started.json()
            with full_disk(database):
                refused = store(keys[1])
                secrets = [*keys, ctl.admin_token, ctl.token("service")]
                assert_clear_error(refused, 507, "storage_full", secrets)
                # Reads still answer: the token's last use is bookkeeping, skipped while full.
                listed = web.get("/api/users/ada/credentials")
                assert listed.status_code == 200, listed.text
                assert [c["version"] for c in listed.json()] == [1], listed.text
                assert [(v, s.api_key) for v, s in ctl.vault("ada", "gemini_cli")] == [(1, keys[0])]
                # A login whose capture meets the full disk (the paste goes straight to the
                # agent, as its CLI's callback would): the controller gives the login up
                # and destroys its VM.
                ctl.sign_in_through_the_agent(login)
                eventually("the login's VM to be destroyed", lambda: ctl.instances() == {})
                assert ctl.vault("ada", "claude_code") == []
            # Once it can write again, the login's row says how it ended (not left open).
            ended = ctl.wait_phase(web, login["id"], {"authenticated", "failed", "cancelled"})
            assert (ended["phase"], ended["error"]["code"]) == ("failed", "storage_full"), ended
            assert "start a new login" in ended["error"]["message"], ended
            admin = ctl.client("admin")
            vm: dict[str, Any] = {}

            def vm_row_ended() -> bool:
                vm.update(admin.get(f"/api/vms/{login['vmId']}").json())
                return bool(vm["state"] == "stopped")

            try:
                eventually("the login VM's row to say it stopped", vm_row_ended)
            except AssertionError as exc:
                raise AssertionError(f"{exc}; the row: {vm}") from None
            assert store(keys[2]).status_code == 201
            listed = web.get("/api/users/ada/credentials")
            assert [c["version"] for c in listed.json()] == [2], listed.text
            assert [(v, s.api_key) for v, s in ctl.vault("ada", "gemini_cli")] == [
                (1, keys[0]), (2, keys[2]),
            ]  # fmt: skip
