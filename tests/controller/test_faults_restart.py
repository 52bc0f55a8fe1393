"""Faults: the controller process SIGKILLed (or frozen) at the worst moments, then restarted.

The controller runs as an OS process of its own (``tests/support/controller_process.py``) on the
real database (SQLite and PostgreSQL), its VMs on the fake backend (the real
agent as a host process with the test bed's fake CLIs), the test bed's OAuth
server in the test process (it outlives every restart). A kill is SIGKILL to
the controller's pid alone: its agents go on running, as a crashed
controller's VMs do. A "frozen" controller is SIGSTOPped at a moment the test
finds by asking the agent, then killed: no hook in the product, no patching.

What must hold after each restart: the interrupted thing (login, capture,
sync-back) ends in a clear state, no agent process is left that no VM row
accounts for, the vault holds whole versions only (each opens and parses),
and the next login or prompt works.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from remotecli.controller.fleet.store import instance_id_for
from remotecli.controller.settings import Settings
from remotecli.testbed import OAuthServer
from tests.support import procfs
from tests.support.controller_process import ControllerProcess, assert_no_orphans, refresh_token_of
from tests.support.poll import eventually

#: Two controller starts, logins and prompts on a 2-core host shared with other runs.
pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def ctl(
    request: pytest.FixtureRequest,
    make_settings: Callable[..., Settings],
    oauth_server: OAuthServer,
) -> Iterator[ControllerProcess]:
    failed_before = request.session.testsfailed
    with ControllerProcess(make_settings(), oauth_server.url) as process:
        yield process
        if request.session.testsfailed > failed_before:
            process.save_logs()


# -- 1. killed while the login waits for the user ---------------------------------------------


def test_a_login_cut_by_sigkill_ends_controller_restarted_and_a_new_one_works(
    ctl: ControllerProcess,
) -> None:
    web, admin = ctl.client("service"), ctl.client("admin")
    started = web.post("/api/auth/start", json={"userId": "ada", "provider": "claude_code"})
    assert started.status_code == 201, started.text
    session = started.json()
    assert (session["phase"], session["expects"]) == ("awaiting_user", "code"), session
    ((instance, agent_pid),) = ctl.instances().items()
    assert agent_pid is not None and procfs.alive(agent_pid), f"no live agent for {instance}"

    ctl.kill()
    assert procfs.alive(agent_pid), "the agent died with the controller: the crash was not a crash"
    ctl.start()
    web, admin = ctl.client("service"), ctl.client("admin")

    after = ctl.session(web, session["id"])
    assert (after["phase"], after["ended"]) == ("failed", True), after
    assert after["error"]["code"] == "controller_restarted", after
    assert "start a new one" in after["error"]["message"], after
    # Reconcile found the auth VM running and adopted it; the login service then destroyed it.
    reports = ctl.reconcile_reports()
    assert [r["adopted"] for r in reports] == [[session["vmId"]]], reports
    vm = admin.get(f"/api/vms/{session['vmId']}").json()
    assert vm["state"] == "stopped" and "orphaned by a restart" in vm["stopReason"], vm
    eventually(f"the old agent (pid {agent_pid}) to exit", lambda: not procfs.alive(agent_pid))
    assert ctl.instances() == {}, "the cut login's VM is still on disk"
    late = web.post(f"/api/auth/sessions/{session['id']}/code", json={"code": "abc#def"})
    assert late.status_code == 409, late.text

    ctl.login(web, "ada", "claude_code")
    listed = web.get("/api/users/ada/credentials").json()
    assert [(c["provider"], c["state"], c["version"]) for c in listed] == [
        ("claude_code", "connected", 1)
    ], listed
    eventually("the new login's VM to be destroyed", lambda: ctl.instances() == {})
    assert_no_orphans(ctl, admin)


# -- 2. killed between the agent's success and the vault write (and right after it) ----------


@pytest.mark.parametrize("moment", ["before_the_vault_write", "after_the_vault_write"])
def test_a_capture_cut_by_sigkill_leaves_no_version_or_a_whole_one(
    ctl: ControllerProcess, moment: str
) -> None:
    web = ctl.client("service")
    started = web.post("/api/auth/start", json={"userId": "ada", "provider": "claude_code"})
    assert started.status_code == 201, started.text
    session = started.json()
    ctl.signal(signal.SIGSTOP)
    ctl.sign_in_through_the_agent(session)
    ((instance, _),) = ctl.instances().items()
    on_vm = ctl.agent(instance).get("/credentials", params={"provider": "claude_code"}).json()
    assert on_vm["complete"], on_vm
    if moment == "after_the_vault_write":
        ctl.signal(signal.SIGCONT)
        eventually(
            "the controller to store the captured files",
            lambda: ctl.vault_files("ada", "claude_code"),
            timeout=30,
        )
    ctl.kill()
    stored = ctl.vault_files("ada", "claude_code")
    ctl.start()
    web, admin = ctl.client("service"), ctl.client("admin")

    files = {f["path"]: f["content"] for f in on_vm["files"]}
    if moment == "before_the_vault_write":
        assert stored == [], "a version was stored by a controller that was frozen"
    else:
        # Whole: the one version holds exactly the files the CLI wrote, and it opens.
        assert stored == [(1, files)], [(v, sorted(f)) for v, f in stored]
    assert ctl.vault_files("ada", "claude_code") == stored
    after = ctl.session(web, session["id"])
    assert after["ended"], f"the cut login is still open after the restart: {after}"
    if after["phase"] != "authenticated":  # killed before its row said so
        assert (after["phase"], after["error"]["code"]) == ("failed", "controller_restarted"), after
    listed = web.get("/api/users/ada/credentials").json()
    assert [c["version"] for c in listed] == [v for v, _ in stored], listed
    eventually("the cut login's VM to be destroyed", lambda: ctl.instances() == {})
    assert_no_orphans(ctl, admin)

    ctl.login(web, "ada", "claude_code")
    newest = ctl.vault_files("ada", "claude_code")
    assert [v for v, _ in newest] == [v for v, _ in stored] + [len(stored) + 1], newest


# -- 3. killed while a run holds a rotated refresh token the vault does not have yet ----------


def prompt_in_background(web: httpx.Client, body: dict[str, Any]) -> threading.Thread:
    """POST /api/prompts on a thread; the controller dies under it, so its end is not read."""

    def run() -> None:
        with (
            contextlib.suppress(httpx.TransportError),
            web.stream("POST", "/api/prompts", json=body) as response,
        ):
            for _ in response.iter_lines():
                pass

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_sync_back_cut_by_sigkill_is_recovered_from_the_adopted_vm(
    ctl: ControllerProcess, oauth_server: OAuthServer
) -> None:
    web, admin = ctl.client("service"), ctl.client("admin")
    ctl.login(web, "ada", "claude_code")
    ((_, first),) = ctl.vault_files("ada", "claude_code")
    eventually("the login's VM to be destroyed", lambda: ctl.instances() == {})
    # The next run's CLI refreshes (single-use refresh token: the old one is spent at once),
    # writes the new files, then the prompt "hang" keeps the run going until it is killed.
    oauth_server.expire_access_tokens("claude")
    runner = prompt_in_background(
        ctl.client("service"), {"userId": "ada", "provider": "claude_code", "prompt": "hang"}
    )
    _, on_vm = ctl.wait_rotated(admin, first)
    issued = {t.refresh_token: t for t in oauth_server.issued_tokens("claude")}
    assert issued[refresh_token_of(first)].refresh_used, "the vault's refresh token is not spent"
    ((cli_instance, cli_pid),) = ctl.instances().items()
    ctl.kill()
    runner.join(10)
    # What the crash left: the vault's newest version holds a spent token, the VM the live one.
    assert [v for v, _ in ctl.vault_files("ada", "claude_code")] == [1]
    ctl.start()
    web, admin = ctl.client("service"), ctl.client("admin")

    (report,) = ctl.reconcile_reports()
    assert report["adopted"] == [vm_id_of(admin, cli_instance)], report
    assert cli_pid is not None and procfs.alive(cli_pid), "the adopted VM's agent is gone"
    versions = ctl.vault_files("ada", "claude_code")
    assert [v for v, _ in versions] == [1, 2], "the VM's rotated copy was not synced back"
    assert refresh_token_of(versions[-1][1]) == refresh_token_of(on_vm)
    runs = admin.get(f"/api/vms/{vm_id_of(admin, cli_instance)}/sessions").json()["recentRuns"]
    assert [(r["status"], r["errorCode"]) for r in runs] == [("failed", "interrupted")], runs

    # The lease is free: the next run starts at once, refreshes from the synced-back token.
    oauth_server.expire_access_tokens("claude")
    finished = ctl.prompt(web, "ada", "hello")
    assert (finished["status"], finished["credentialsChanged"]) == ("succeeded", True), finished
    assert [v for v, _ in ctl.vault_files("ada", "claude_code")] == [1, 2, 3]
    assert_no_orphans(ctl, admin)
    log = ctl.logs()
    for version, files in ctl.vault_files("ada", "claude_code"):
        assert refresh_token_of(files) not in log, f"version {version}'s refresh token is logged"


def vm_id_of(admin: httpx.Client, instance_id: str) -> str:
    vms: list[dict[str, str]] = admin.get("/api/vms").json()["vms"]
    (vm_id,) = [vm["id"] for vm in vms if instance_id_for(vm["id"]) == instance_id]
    return vm_id
