"""F2 and F4: a VM holds only its own user's credentials, and sync-back refuses what it must.

The whole flow on the real controller (uvicorn, SQLite and PostgreSQL), the
fake backend (the real agent as a host process per VM) and the test bed:
two users connect through the real login flow and run prompts; each
user's CLI VM is then asked (through its own agent) what it holds.
"""

from __future__ import annotations

import json
import secrets

from remotecli.controller.vault import sync
from remotecli.controller.vault.sync import SyncOutcome
from remotecli.vmm.agentclient import AgentClient
from tests.support.controller import Controller
from tests.support.streams import only

USERS = ("ada", "bob")
#: Two providers keep the test short; Codex's files go the same way (sync.prepare is
#: provider-blind).
PROVIDERS = ("claude_code", "gemini_cli")


def run_vm(world: Controller, user: str, provider: str) -> str:
    """Run a prompt for ``user`` and return the id of the CLI VM it ran in."""
    events = world.prompt(user, provider, "hello")
    assert only(events, "done")["status"] == "succeeded", events
    vm_id: str = only(events, "run")["vmId"]
    return vm_id


def held(world: Controller, vm_id: str, provider: str) -> dict[str, str]:
    """The credential files a VM's agent holds for ``provider`` (path → content)."""
    with world.agent_client(vm_id) as agent:
        answer = agent.get("/credentials", params={"provider": provider})
    assert answer.status_code == 200, answer.text
    return {f["path"]: f["content"] for f in answer.json()["files"]}


def sync_back(world: Controller, vm_id: str, user: str, provider: str) -> SyncOutcome:
    """The controller's own sync-back of ``vm_id``'s copy into ``user``'s vault records."""
    handle = world.handle(vm_id)
    assert handle is not None

    async def go() -> SyncOutcome:
        endpoint, token = handle.instance.agent_endpoint, handle.instance.spec.agent_token
        async with AgentClient(endpoint, token) as agent:
            return await sync.sync_back(world.context, agent, user, provider, vm_id)

    return world.call(go())


def rotate_in_vm(world: Controller, vm_id: str, provider: str) -> dict[str, str]:
    """Change the VM's copy the way a refresh would (new token strings); return the new files."""
    files = {
        path: json.dumps({**json.loads(content), "rotatedInVm": secrets.token_hex(8)})
        for path, content in held(world, vm_id, provider).items()
    }
    with world.agent_client(vm_id) as agent:
        body = {
            "provider": provider,
            "files": [{"path": p, "content": c} for p, c in files.items()],
        }
        written = agent.post("/credentials/write", json=body)
    assert written.status_code == 200, written.text
    return files


def test_each_users_vm_holds_only_that_users_credentials(world: Controller) -> None:
    vms: dict[str, str] = {}
    for user in USERS:
        world.add_user(user)
        for provider in PROVIDERS:
            world.connect(user, provider)
        ran = {run_vm(world, user, provider) for provider in PROVIDERS}
        assert len(ran) == 1, f"{user}'s runs went to several VMs: {ran}"
        vms[user] = ran.pop()
    assert vms["ada"] != vms["bob"], "two users shared a CLI VM"
    for user in USERS:
        other = next(u for u in USERS if u != user)
        for provider in PROVIDERS:
            own = world.current(user, provider)
            theirs = world.current(other, provider)
            assert own is not None and theirs is not None
            in_vm = held(world, vms[user], provider)
            assert in_vm == world.files(own), (
                f"{user}'s VM holds other {provider} files than {user}'s vault record"
            )
            secrets_of_other = {c for c in world.files(theirs).values() if len(c) > 20}
            everything = json.dumps(
                {p: held(world, vms[user], p) for p in PROVIDERS}, ensure_ascii=False
            )
            assert not [s for s in secrets_of_other if s in everything], (
                f"{user}'s VM holds {other}'s {provider} credential file"
            )
            lease = world.lease(user, provider)
            assert lease is not None and lease.vm_id == vms[user], lease


def test_sync_back_refuses_a_vm_without_the_lease_and_a_copy_a_new_login_replaced(
    world: Controller,
) -> None:
    provider = "claude_code"
    for user in USERS:
        world.add_user(user)
        world.connect(user, provider)
    ada_vm, bob_vm = run_vm(world, "ada", provider), run_vm(world, "bob", provider)
    ada_before = world.current("ada", provider)
    assert ada_before is not None

    # not_holder: bob's VM, with changed files, cannot store anything as ada's.
    rotate_in_vm(world, bob_vm, provider)
    assert sync_back(world, bob_vm, "ada", provider) == SyncOutcome(
        changed=False, skipped="not_holder"
    )
    ada_now = world.current("ada", provider)
    assert ada_now is not None and ada_now.version == ada_before.version, "bob's VM wrote ada's"

    # relogged: ada logs in again while her VM holds a rotated copy of the old chain.
    relogin = world.connect("ada", provider)
    assert relogin.version == ada_before.version + 1
    stale = rotate_in_vm(world, ada_vm, provider)
    assert sync_back(world, ada_vm, "ada", provider) == SyncOutcome(
        changed=True, skipped="relogged"
    )
    # The VM going away runs the same sync-back (before-destroy hook): the login still wins.
    world.call(world.vms.destroy(ada_vm, "test"))
    latest = world.current("ada", provider)
    assert latest is not None and latest.version == relogin.version, "the stale copy was stored"
    assert world.files(latest) == world.files(relogin) != stale
    # bob's own copy still syncs back to bob: the refusals were about who, not what.
    bob_before = world.current("bob", provider)
    assert bob_before is not None
    outcome = sync_back(world, bob_vm, "bob", provider)
    assert outcome == SyncOutcome(changed=True, stored=bob_before.version + 1), outcome
