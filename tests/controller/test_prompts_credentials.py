"""Credentials across prompt runs: rotation synced back, refresh failures, leases, idle VMs."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from remotecli.controller.db import engine as db
from remotecli.controller.db.models import (
    Credential,
    CredentialState,
    Lease,
    PromptRun,
    RunStatus,
    utcnow,
)
from remotecli.controller.settings import Settings
from remotecli.testbed import OAuthError, OAuthServer
from tests.support.controller import SERVER_NAME, Controller, prompt_world, short_state
from tests.support.poll import eventually
from tests.support.streams import only, read_sse


def refresh_token(world: Controller, record: Credential) -> str:
    files = world.files(record)
    if record.provider == "codex":
        token: str = json.loads(files[".codex/auth.json"])["tokens"]["refresh_token"]
    else:
        token = json.loads(files[".claude/.credentials.json"])["claudeAiOauth"]["refreshToken"]
    return token


def wait_for(check: Callable[[], Any], seconds: float = 10.0) -> Any:
    return eventually(f"{check} to hold", check, seconds)


@pytest.mark.parametrize("provider", ["claude_code", "codex"])
def test_a_rotated_refresh_token_becomes_a_new_vault_version(
    world: Controller, oauth_server: OAuthServer, provider: str
) -> None:
    user = world.add_user("ada")
    first = world.connect(user, provider)
    oauth_server.expire_access_tokens(SERVER_NAME[provider])
    events = world.prompt(user, provider, "hello")
    done = only(events, "done")
    assert (done["status"], done["credentialsChanged"]) == ("succeeded", True), events
    second = world.current(user, provider)
    assert second is not None and second.version == first.version + 1
    assert done["credentialsVersion"] == second.version
    old, new = refresh_token(world, first), refresh_token(world, second)
    assert old != new
    issued = {t.refresh_token: t for t in oauth_server.issued_tokens(SERVER_NAME[provider])}
    assert issued[old].refresh_used and not issued[new].refresh_used
    # The vault holds the live chain: a run in a NEW VM, from the vault, refreshes again.
    world.call(world.vms.destroy(only(events, "run")["vmId"], "test"))
    oauth_server.expire_access_tokens(SERVER_NAME[provider])
    again = only(world.prompt(user, provider, "hello"), "done")
    assert (again["status"], again["credentialsChanged"]) == ("succeeded", True)
    third = world.current(user, provider)
    assert third is not None and third.version == second.version + 1
    # And the spent token, if anyone still used it, is caught as a reuse.
    spec = oauth_server.authority.client(SERVER_NAME[provider])
    with pytest.raises(OAuthError) as caught:
        oauth_server.authority.token(
            SERVER_NAME[provider],
            {"grant_type": "refresh_token", "refresh_token": old, "client_id": spec.client_id},
        )
    assert "already been used" in caught.value.description


def test_a_refresh_failure_marks_needs_login_and_keeps_the_files(
    world: Controller, oauth_server: OAuthServer
) -> None:
    user = world.add_user("ada")
    record = world.connect(user, "codex")
    oauth_server.expire_access_tokens("codex")
    oauth_server.revoke_all("codex")
    events = world.prompt(user, "codex", "hello")
    codes = [d["code"] for n, d in events if n == "error"]
    assert codes[-1] == "needs_login" and ({"refresh_failed", "auth_required"} & set(codes))
    assert "log in again" in [d for n, d in events if n == "error"][-1]["message"]
    assert only(events, "done")["status"] == "failed"
    current = world.current(user, "codex")
    assert current is not None and current.state == CredentialState.NEEDS_LOGIN
    assert world.files(current) == world.files(record)  # kept, not wiped
    response = world.client("service").post(
        "/api/prompts", json={"userId": user, "provider": "codex", "prompt": "hello"}
    )
    assert (response.status_code, response.json()["code"]) == (409, "needs_login")


def test_hanging_up_cancels_the_run_in_the_vm_and_still_releases(world: Controller) -> None:
    user = world.add_user("ada")
    world.connect(user, "claude_code")
    with HangingRun(world, user, "claude_code") as hanging:
        run = hanging.run
        assert world.run_row(run["runId"]).status == RunStatus.RUNNING  # type: ignore[union-attr]
    assert hanging.row().status == RunStatus.CANCELLED
    with world.agent_client(run["vmId"]) as agent:
        assert agent.get("/prompts").json() == {"runs": []}
    lease = world.lease(user, "claude_code")
    assert lease is not None and (lease.vm_id, lease.run_id) == (run["vmId"], None)
    # The credentials are free again: the next prompt runs.
    assert only(world.prompt(user, "claude_code", "hello"), "done")["status"] == "succeeded"


def test_a_second_prompt_while_one_runs_is_refused(world: Controller) -> None:
    user = world.add_user("ada")
    world.connect(user, "codex")
    world.connect(user, "claude_code")
    with HangingRun(world, user, "codex") as first:
        response = world.client("service").post(
            "/api/prompts", json={"userId": user, "provider": "codex", "prompt": "hi"}
        )
        assert (response.status_code, response.json()["code"]) == (409, "credentials_busy")
        assert first.run["runId"] in response.json()["message"]
        # Another provider of the same user is not held up.
        assert only(world.prompt(user, "claude_code", "hi"), "done")["status"] == "succeeded"
    assert first.row().status == RunStatus.CANCELLED
    assert only(world.prompt(user, "codex", "hi"), "done")["status"] == "succeeded"


def test_two_controllers_pass_the_live_copy_between_their_vms(
    settings: Settings, oauth_server: OAuthServer
) -> None:
    """Two controllers on one database: each runs the user on its own CLI VM.

    Every run refreshes (the access tokens are expired first), so every run
    spends a single-use refresh token: a run that got a stale copy would be
    caught by the server's reuse detection and fail.
    """
    with (
        short_state(settings) as shared,
        prompt_world(shared, oauth_server) as one,
        prompt_world(shared, oauth_server) as two,
    ):
        user = one.add_user("ada")
        one.connect(user, "codex")
        runs = []
        for world in (one, two, one, two):
            oauth_server.expire_access_tokens("codex")
            events = world.prompt(user, "codex", "hello")
            assert only(events, "done")["status"] == "succeeded", events
            runs.append(only(events, "run")["vmId"])
            lease = world.lease(user, "codex")
            assert lease is not None and lease.vm_id == runs[-1]
        vm_one, vm_two = runs[0], runs[1]
        assert vm_one != vm_two and runs == [vm_one, vm_two, vm_one, vm_two]
        # While one controller's run holds the lease, the other is refused.
        with HangingRun(two, user, "codex") as hanging:
            refused = one.client().post(
                "/api/prompts", json={"userId": user, "provider": "codex", "prompt": "hi"}
            )
            assert (refused.status_code, refused.json()["code"]) == (409, "credentials_busy")
        assert hanging.row().status == RunStatus.CANCELLED
        # Exactly one refresh token is live, and the vault and VM two hold it;
        # VM one still has a copy, but of a spent token.
        live = [t for t in oauth_server.issued_tokens("codex")
                if not t.refresh_used and not t.revoked]  # fmt: skip
        current = one.current(user, "codex")
        assert current is not None
        assert [t.refresh_token for t in live] == [refresh_token(one, current)]
        with one.agent_client(vm_one) as a, two.agent_client(vm_two) as b:
            held_one = a.get("/credentials", params={"provider": "codex"}).json()
            held_two = b.get("/credentials", params={"provider": "codex"}).json()
        assert held_two["version"] == current.content_version
        stale = json.loads(held_one["files"][0]["content"])["tokens"]["refresh_token"]
        assert stale != live[0].refresh_token


def test_two_racing_prompts_never_both_get_the_credentials(world: Controller) -> None:
    user = world.add_user("ada")
    world.connect(user, "codex")
    results: list[int] = []
    barrier = threading.Barrier(2)

    def go() -> None:
        body = {"userId": user, "provider": "codex", "prompt": "hang", "timeoutSeconds": 2}
        barrier.wait()
        with world.client("service").stream("POST", "/api/prompts", json=body) as response:
            results.append(response.status_code)
            if response.status_code == 200:
                read_sse(response)

    threads = [threading.Thread(target=go) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(results) == [200, 409]


# -- helpers -------------------------------------------------------------------------------


class HangingRun:
    """A prompt that hangs, posted on a raw socket; leaving the block hangs up.

    A raw socket makes the hang-up unambiguous (an HTTP client may keep a
    half-read stream's connection open).
    """

    def __init__(self, world: Controller, user: str, provider: str) -> None:
        self.world = world
        body = json.dumps({"userId": user, "provider": provider, "prompt": "hang"}).encode()
        self.host, port = world.url.removeprefix("http://").split(":")
        self.port = int(port)
        self.request = (
            f"POST /api/prompts HTTP/1.1\r\nHost: {self.host}\r\n"
            f"Authorization: Bearer {world.token('service')}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        self.run: dict[str, Any] = {}

    def __enter__(self) -> HangingRun:
        self.sock = socket.create_connection((self.host, self.port), timeout=30)
        self.sock.sendall(self.request)
        received = b""
        while b"event: session" not in received:  # the CLI runs
            chunk = self.sock.recv(4096)
            assert chunk, received
            received += chunk
        marker = b"event: run\ndata: "
        start = received.index(marker) + len(marker)
        self.run = json.loads(received[start : received.index(b"\n", start)])
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def row(self) -> PromptRun:
        """The run's row once it finished (cancel, drain, sync-back, release)."""
        found: PromptRun = wait_for(
            lambda: (r := self.world.run_row(self.run["runId"])) and r.finished_at and r
        )
        return found


def test_after_a_crash_mid_run_the_next_start_ends_the_run_and_frees_the_lease(
    settings: Settings, oauth_server: OAuthServer
) -> None:
    with short_state(settings) as short:
        with prompt_world(short, oauth_server) as world:
            user = world.add_user("ada")
            world.connect(user, "codex")
            vm_id = only(world.prompt(user, "codex", "hello"), "run")["vmId"]
        # What a crash mid-run leaves (a clean stop syncs back and drops the lease):
        # the run still RUNNING, the lease still busy on a VM that died with us.
        asyncio.run(leave_a_crashed_run(short, user, vm_id))
        with prompt_world(short, oauth_server) as world:
            row = world.run_row("run_crashed000000")
            assert row is not None and (row.status, row.error_code) == ("failed", "interrupted")
            assert world.lease(user, "codex") is None
            assert only(world.prompt(user, "codex", "hello"), "done")["status"] == "succeeded"


async def leave_a_crashed_run(settings: Settings, user: str, vm_id: str) -> None:
    engine = db.make_engine(settings.resolved_database_url)
    try:
        async with db.session_scope(db.sessionmaker(engine)) as session:
            session.add(PromptRun(id="run_crashed000000", user_id=user, provider="codex",
                                  vm_id=vm_id, status=RunStatus.RUNNING.value))  # fmt: skip
            session.add(Lease(user_id=user, provider="codex", vm_id=vm_id, credential_version=1,
                              run_id="run_crashed000000",
                              busy_until=utcnow() + timedelta(hours=1)))  # fmt: skip
    finally:
        await engine.dispose()
