"""Faults on the agent and VM side, injected while the real controller works.

The real controller (uvicorn, SQLite and PostgreSQL), the real agent as a host
process (fake backend) with the test bed's fake CLIs; one case on nspawn.
Each test kills something with SIGKILL at the worst moment (the agent while a
login waits for its code, while a prompt or a perspectives run streams; a
VM's whole process group in the pool or between two prompts; systemd-nspawn
under a live container) and checks that the user sees a clear ending with a
code and what to do, that nothing is lost (the vault's credentials) or left
(rows saying "running", leases, processes, state dirs, cgroups, mounts), that
the next request works, and that no secret reached the logs, the answers or
the rows that describe the fault.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from remotecli.controller.db.models import RunStatus, Vm, VmRole, VmState
from remotecli.controller.settings import Settings
from remotecli.controller.vault import credentials
from remotecli.testbed import OAuthServer, login
from remotecli.vmm.fake.backend import FakeInstance
from remotecli.vmm.nspawn.backend import NspawnInstance
from remotecli.vmm.statedir import mounts_under
from tests.support import procfs
from tests.support.controller import Controller, vm_controller
from tests.support.faults import (
    leaks,
    processes_of,
    recording_logs,
    sigkill,
    sigkill_group,
)
from tests.support.poll import eventually
from tests.support.streams import Event, EventReader, text_of
from tests.support.user import PASSWORD, USER, answer_for

ENDED = {"authenticated", "failed", "cancelled", "expired"}


def fake_instance(handle: Any) -> FakeInstance:
    instance = handle.instance
    assert isinstance(instance, FakeInstance), f"not a fake instance: {instance!r}"
    return instance


def all_gone(directory: Path, what: str) -> None:
    """Wait until no process names ``directory`` and the directory itself is gone."""

    def gone() -> bool:
        return not processes_of(directory) and not directory.exists()

    try:
        eventually(what, gone, timeout=15)
    except AssertionError:
        left = procfs.describe(processes_of(directory))
        raise AssertionError(
            f"{what}: after 15 s, processes {left or 'none'}, "
            f"state dir {'still there' if directory.exists() else 'gone'}"
        ) from None


def oauth_secrets(server: OAuthServer) -> dict[str, str]:
    out = {}
    for n, token in enumerate(server.issued_tokens()):
        out[f"access token #{n}"] = token.access_token
        out[f"refresh token #{n}"] = token.refresh_token
    return out


# -- 1. the agent killed in the middle of a login -----------------------------------------------


def claude_login_on(harness: Controller, web: httpx.Client) -> tuple[dict[str, Any], FakeInstance]:
    """A Claude login for "ada" showing its URL; its VM, with the agent and the CLI running."""
    started = web.post("/api/auth/start", json={"userId": "ada", "provider": "claude_code"})
    assert started.status_code == 201, started.text
    session: dict[str, Any] = started.json()
    assert (session["phase"], session["expects"]) == ("awaiting_user", "code"), session
    instance = fake_instance(harness.read(lambda: harness.vms.get(session["vmId"])))
    assert instance.pid is not None
    before = processes_of(instance.dir.path)
    assert instance.pid in before and len(before) >= 2, (
        f"expected the agent ({instance.pid}) and the CLI's login: {procfs.describe(before)}"
    )
    return session, instance


def test_an_agent_killed_mid_login_ends_the_login_clearly_and_the_next_one_works(
    harness: Controller,
) -> None:
    with recording_logs() as logs:
        web = harness.client("service")
        session, instance = claude_login_on(harness, web)
        sid, vm_id, vm_dir = session["id"], session["vmId"], instance.dir.path
        events = EventReader(web, f"/api/auth/sessions/{sid}/events")
        # The user signs in at the provider; the agent dies before the code is pasted.
        signed_in = login(session["loginUrl"], USER, PASSWORD)
        assert signed_in.code is not None and instance.pid is not None

        sigkill(instance.pid)

        ended = harness.wait_phase(web, sid, ENDED, seconds=30)
        assert ended["phase"] == "failed", f"the login did not fail after its agent died: {ended}"
        error = ended["error"]
        assert error is not None and error["code"] == "vm_lost", ended
        assert "start a new login" in error["message"], error
        streamed = events.wait()
        assert streamed[-1]["phase"] == "failed", events.phases()
        assert streamed[-1]["error"]["code"] == "vm_lost", streamed[-1]
        late = web.post(f"/api/auth/sessions/{sid}/code", json={"code": signed_in.code})
        assert (late.status_code, late.json()["code"]) == (409, "session_ended"), late.text
        # The monitor noticed: the row says why, with the failed checks as evidence.
        row = harness.vm_row(vm_id)
        assert row.state == VmState.FAILED, (row.state, row.stop_reason, row.error)
        assert row.error is not None and row.error["code"] == "vm_unhealthy", row.error
        assert row.stop_reason is not None and row.stop_reason.startswith("unhealthy"), row
        assert harness.counts()["credentials"] == 0, "a half-done login stored credentials"
        all_gone(vm_dir, "the killed login VM's processes and state dir")

        # A new login for the same user and provider works end to end.
        again = web.post("/api/auth/start", json={"userId": "ada", "provider": "claude_code"})
        assert again.status_code == 201, again.text
        second = again.json()
        assert second["vmId"] != vm_id
        answer = answer_for(second)
        assert answer is not None
        done = web.post(f"/api/auth/sessions/{second['id']}/code", json=answer)
        assert done.status_code == 200, done.text
        finished = harness.wait_phase(web, second["id"], ENDED)
        assert finished["phase"] == "authenticated", finished

        async def stored() -> dict[str, str]:
            async with harness.context.sessions() as db:
                record = await credentials.current(db, "ada", "claude_code")
            assert record is not None and record.version == 1, record
            files = credentials.open_files(harness.context.vault, record)
            return {f.path: f.content for f in files}

        files = harness.call(stored())
        assert files and all(files.values()), f"the new login's files are empty: {list(files)}"
        secrets = {
            **oauth_secrets(harness.oauth),
            "pasted code (dead VM)": signed_in.code,
            "pasted code (new login)": answer["code"],
            "VM token": instance.spec.agent_token,
            "service API token": harness.token("service"),
            **{f"credential file {p}": c for p, c in files.items()},
        }
        texts = {
            "controller log": "\n".join(logs.lines),
            "the failed session": json.dumps(ended),
            "the session's events": json.dumps(streamed),
            "the late paste's answer": late.text,
            "the VM row": json.dumps(
                {"reason": row.stop_reason, "error": row.error, "console": row.console_tail}
            ),
        }
    assert all(texts.values()), f"nothing to scan in {[k for k, v in texts.items() if not v]}"
    found = leaks(secrets, texts)
    assert not found, "secrets leaked:\n" + "\n".join(found)


def test_a_code_pasted_to_a_dead_agent_is_refused_clearly_and_the_login_still_ends(
    harness: Controller,
) -> None:
    web = harness.client("service")
    session, instance = claude_login_on(harness, web)
    signed_in = login(session["loginUrl"], USER, PASSWORD)
    assert signed_in.code is not None and instance.pid is not None
    sigkill(instance.pid)

    # At once: the driver gives the agent a few polls before it calls the VM lost.
    pasted = web.post(f"/api/auth/sessions/{session['id']}/code", json={"code": signed_in.code})

    refused = (pasted.status_code, pasted.json().get("code"))
    print(f"\na code pasted to a dead agent: {refused}")
    assert refused in {(502, "agent_unreachable"), (409, "session_ended")}, pasted.text
    if refused[0] == 502:
        assert "start a new login" in pasted.json()["message"], pasted.text
    ended = harness.wait_phase(web, session["id"], ENDED, seconds=30)
    assert (ended["phase"], ended["error"]["code"]) == ("failed", "vm_lost"), ended
    assert harness.counts()["credentials"] == 0, "a code pasted to a dead agent stored something"
    assert signed_in.code not in pasted.text + json.dumps(ended)
    all_gone(instance.dir.path, "the dead login VM's processes and state dir")


# -- 2. the agent killed in the middle of a prompt run -------------------------------------------


def stream_killing_the_agent(
    world: Controller, path: str, body: dict[str, Any], running: Callable[[list[Event]], bool]
) -> tuple[list[Event], FakeInstance]:
    """POST ``body`` and read the SSE answer; SIGKILL the runs' agent once ``running(events)``.

    Returns every event to the stream's end, and the killed VM's instance.
    """
    events: list[Event] = []
    killed: FakeInstance | None = None
    with world.client(timeout=30).stream("POST", path, json=body) as response:
        assert response.status_code == 200, response.read()
        name = "message"
        try:
            for line in response.iter_lines():
                if line.startswith("event: "):
                    name = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    events.append((name, json.loads(line.removeprefix("data: "))))
                    if killed is None and running(events):  # the CLIs run: kill their agent
                        run = next(d for n, d in events if n == "run")
                        killed = fake_instance(world.handle(run["vmId"]))
                        assert killed.pid is not None
                        sigkill(killed.pid)
        except httpx.ReadTimeout:
            raise AssertionError(
                f"the stream hung after the agent was killed; events: {events}"
            ) from None
    assert killed is not None, f"the runs never got going: {events}"
    return events, killed


def test_an_agent_killed_mid_prompt_ends_the_stream_and_keeps_the_credentials(
    world: Controller,
) -> None:
    with recording_logs() as logs:
        user = world.add_user("ada")
        record = world.connect(user, "claude_code")
        files = world.files(record)
        body = {"userId": user, "provider": "claude_code", "prompt": "hang"}
        events, killed = stream_killing_the_agent(
            world, "/api/prompts", body, lambda seen: "session" in [n for n, _ in seen]
        )
        names = [n for n, _ in events]
        errors = [d for n, d in events if n == "error"]
        assert names[-1] == "done" and errors, f"no error, then done: {names}"
        done = events[-1][1]
        assert done["status"] == "failed" and done["error"]["code"] == errors[0]["code"], done
        assert "lost the run in the VM" in errors[0]["message"], errors
        run_id, vm_id = done["runId"], next(d for n, d in events if n == "run")["vmId"]
        row = world.run_row(run_id)
        assert row is not None and row.status == RunStatus.FAILED, row
        assert (row.error_code, row.finished_at is not None) == (errors[0]["code"], True), row
        lease = world.lease(user, "claude_code")
        assert lease is None or lease.run_id is None, f"the lease still names the run: {lease}"
        # The vault still holds the login's files, newest, and they decrypt.
        current = world.current(user, "claude_code")
        assert current is not None and current.version == record.version, current
        assert world.files(current) == files

        # The dead VM was destroyed at once (not after the monitor's 30 s), and says why.
        vm_row = eventually("the dead CLI VM's row to end", lambda: _ended_vm(world, vm_id))
        assert vm_row.state == VmState.FAILED, (vm_row.state, vm_row.stop_reason)
        assert vm_row.error is not None and vm_row.error["code"] == "vm_unhealthy", vm_row.error
        assert vm_row.stop_reason and "the agent died during run" in vm_row.stop_reason, vm_row

        # The next prompt runs, on a new VM.
        after = world.prompt(user, "claude_code", "hello again")
        assert text_of(after) == "You said: hello again", after
        assert next(d for n, d in after if n == "run")["vmId"] != vm_id
        all_gone(killed.dir.path, "the killed CLI VM's processes and state dir")
        lease = world.lease(user, "claude_code")
        assert lease is not None and lease.run_id is None, lease
        assert lease.vm_id == next(d for n, d in after if n == "run")["vmId"], lease
        secrets = {
            **oauth_secrets(world.oauth),
            "VM token": killed.spec.agent_token,
            "service API token": world.token("service"),
            **{f"credential file {p}": c for p, c in files.items()},
        }
        texts = {
            "controller log": "\n".join(logs.lines),
            "the run's events": json.dumps(events),
            "the run row": json.dumps([row.error_code, row.error_message]),
            "the VM row": json.dumps(
                {
                    "reason": vm_row.stop_reason,
                    "error": vm_row.error,
                    "console": vm_row.console_tail,
                }
            ),
        }
    assert all(texts.values()), f"nothing to scan in {[k for k, v in texts.items() if not v]}"
    found = leaks(secrets, texts)
    assert not found, "secrets leaked:\n" + "\n".join(found)


def test_an_agent_killed_under_perspectives_ends_every_providers_run(world: Controller) -> None:
    user = world.add_user("ada")
    providers = ["claude_code", "gemini_cli"]
    for provider in providers:
        world.connect(user, provider)

    def both_running(seen: list[Event]) -> bool:
        after_run = {d.get("provider") for n, d in seen if n not in ("run", "end")}
        return set(providers) <= after_run

    body = {"userId": user, "providers": providers, "prompt": "hang"}
    events, killed = stream_killing_the_agent(world, "/api/perspectives", body, both_running)

    assert [n for n, _ in events][-1] == "end", events
    for provider in providers:
        mine = [(n, d) for n, d in events if d.get("provider") == provider]
        assert [n for n, _ in mine][-1] == "done", (provider, mine)
        errors = [d for n, d in mine if n == "error"]
        assert errors and "lost the run in the VM" in errors[0]["message"], (provider, mine)
        row = world.run_row(mine[-1][1]["runId"])
        assert row is not None and row.status == RunStatus.FAILED, (provider, row)
        lease = world.lease(user, provider)
        assert lease is None or lease.run_id is None, (provider, lease)
    summary = {r["provider"]: r["status"] for r in next(d for n, d in events if n == "end")["runs"]}
    assert summary == dict.fromkeys(providers, "failed"), summary
    again = world.perspectives(user, providers, "hi")
    statuses = {r["provider"]: r["status"] for r in next(d for n, d in again if n == "end")["runs"]}
    assert statuses == dict.fromkeys(providers, "succeeded"), again
    dead = {d["vmId"] for n, d in events if n == "run"}
    assert not dead & {d["vmId"] for n, d in again if n == "run"}, (dead, again)
    all_gone(killed.dir.path, "the killed CLI VM's processes and state dir")


def test_a_users_idle_cli_vm_killed_between_prompts_is_replaced_by_the_next_prompt(
    world: Controller,
) -> None:
    user = world.add_user("ada")
    record = world.connect(user, "claude_code")
    first = world.prompt(user, "claude_code", "hello")
    vm_id = next(d for n, d in first if n == "run")["vmId"]
    instance = fake_instance(world.handle(vm_id))
    assert instance.pid is not None

    sigkill_group(instance.pid)  # between two prompts: nobody is streaming from it

    after = world.prompt(user, "claude_code", "hello again")
    assert text_of(after) == "You said: hello again", after
    assert next(d for n, d in after if n == "run")["vmId"] != vm_id
    vm_row = eventually("the dead CLI VM's row to end", lambda: _ended_vm(world, vm_id))
    assert (vm_row.state, vm_row.error and vm_row.error["code"]) == (VmState.FAILED, "vmm_exited")
    current = world.current(user, "claude_code")
    assert current is not None and world.files(current) == world.files(record)
    all_gone(instance.dir.path, "the killed CLI VM's processes and state dir")


def _ended_vm(world: Controller, vm_id: str) -> Vm | None:
    async def read() -> Vm | None:
        async with world.context.sessions() as session:
            row = await session.get(Vm, vm_id)
        return row if row is not None and row.stopped_at is not None else None

    return world.call(read())


# -- 3. the VM's process killed -------------------------------------------------------------------


def test_a_killed_pool_vm_is_marked_failed_shown_and_replaced(
    make_settings: Callable[..., Settings],
) -> None:
    with vm_controller(make_settings(warm_pool_auth=1)) as ctl:
        pooled = eventually("a warm auth VM", lambda: ctl.pool(VmRole.AUTH))
        vm_id = pooled[0]
        instance = fake_instance(ctl.read(lambda: ctl.vms.get(vm_id)))
        assert instance.pid is not None

        sigkill_group(instance.pid)

        row = eventually(
            "the killed VM's row to say failed",
            lambda: (vm := ctl.vm(vm_id))["state"] == "failed" and vm,
        )
        assert row["error"]["code"] == "vm_unhealthy", row
        assert "health checks" in row["error"]["message"], row["error"]
        assert row["stopReason"].startswith("unhealthy"), row
        vms_page = ctl.client().get("/api/vms", params={"all": "true"})
        listed = {v["id"]: v for v in vms_page.json()["vms"]}
        assert listed[vm_id]["state"] == "failed", listed[vm_id]
        refilled = eventually(
            "the pool to refill", lambda: [v for v in ctl.pool(VmRole.AUTH) if v != vm_id]
        )
        assert ctl.vm(refilled[0])["state"] == "ready"
        all_gone(instance.dir.path, "the killed VM's processes and state dir")
        detail = ctl.client().get(f"/api/vms/{vm_id}")
        secrets = {
            "VM token": instance.spec.agent_token,
            "admin API token": ctl.admin_token,
        }
        texts = {"GET /api/vms": vms_page.text, f"GET /api/vms/{vm_id}": detail.text}
    assert all(texts.values()), f"nothing to scan in {[k for k, v in texts.items() if not v]}"
    found = leaks(secrets, texts)
    assert not found, "secrets leaked:\n" + "\n".join(found)


# -- 3b. the same on nspawn: systemd-nspawn itself killed ----------------------------------------


@pytest.mark.timeout(600)  # a cold machine builds the test image first (~1 min)
def test_a_killed_nspawn_launcher_fails_the_vm_and_leaves_nothing(
    nspawn_settings: Callable[..., Settings],
) -> None:
    settings = nspawn_settings(warm_pool_auth=1, health_interval_seconds=0.5)
    with vm_controller(settings, deadlines=None) as ctl:
        pooled = eventually("a warm auth container", lambda: ctl.pool(VmRole.AUTH), timeout=60)
        vm_id = pooled[0]
        instance = ctl.read(lambda: ctl.vms.get(vm_id))
        assert instance is not None
        container = instance.instance
        assert isinstance(container, NspawnInstance), container
        guest_init = container.container_pid()
        assert container.pid is not None and guest_init is not None
        vm_dir = container.dir.path

        sigkill(container.pid)  # systemd-nspawn itself; the guest is left running

        row = eventually(
            "the row of the container whose nspawn was killed to say failed",
            lambda: _ended(ctl.vm(vm_id)),
            timeout=30,
        )
        assert (row["state"], row["error"]["code"]) == ("failed", "vmm_exited"), row
        assert "exited" in row["error"]["message"], row["error"]
        assert row["stopReason"].startswith("VMM process exited"), row
        refilled = eventually(
            "the pool to refill",
            lambda: [v for v in ctl.pool(VmRole.AUTH) if v != vm_id],
            timeout=60,
        )
        assert ctl.vm(refilled[0])["state"] == "ready"
        all_gone(vm_dir, "the killed container's processes and state dir")
        assert mounts_under(vm_dir) == [], mounts_under(vm_dir)
        assert not any(d.exists() for d in container.cgroup.dirs()), container.cgroup.dirs()
        assert not procfs.alive(guest_init), f"the guest's init (pid {guest_init}) still runs"
        detail = ctl.client().get(f"/api/vms/{vm_id}")
        console = ctl.client().get(f"/api/vms/{vm_id}/console")
    secrets = {"VM token": container.spec.agent_token, "admin API token": ctl.admin_token}
    texts = {f"GET /api/vms/{vm_id}": detail.text, "its console": console.text}
    assert all(texts.values()), f"nothing to scan in {[k for k, v in texts.items() if not v]}"
    found = leaks(secrets, texts)
    assert not found, "secrets leaked:\n" + "\n".join(found)


def _ended(vm: dict[str, Any]) -> dict[str, Any] | None:
    return vm if vm["state"] in ("failed", "stopped") else None
