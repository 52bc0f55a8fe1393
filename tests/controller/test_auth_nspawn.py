"""A whole login through the controller with its auth VM in an nspawn container (the golden image).

The VM manager chooses nspawn and the test image from the settings, as
``remotecli up`` does. The container has a private network: the test bed's
OAuth server also answers inside it at the very same URL (a socket bound in
the container's network namespace, served by this process), as in
tests/vmm/test_container_login.py. Skipped where nspawn cannot run
(``remotecli doctor`` says why).
"""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from remotecli.controller.db.models import VmState
from remotecli.controller.settings import Settings
from remotecli.controller.vault import credentials
from remotecli.testbed import OAuthServer
from remotecli.testbed.netns import listen_in_netns
from remotecli.vmm import hostcheck
from remotecli.vmm.nspawn.backend import NspawnInstance
from tests.support.controller import auth_controller
from tests.support.poll import eventually
from tests.support.streams import prompt_text
from tests.support.user import answer_for

#: A cold machine builds the test image (~1 min) inside this test.
pytestmark = pytest.mark.timeout(900)


@pytest.fixture
def nspawn_settings(make_settings: Callable[..., Settings]) -> Settings:
    check = next(c for c in hostcheck.assess(hostcheck.gather()) if c.name == "nspawn")
    if not check.can_run:
        pytest.skip("nspawn cannot run here: " + "; ".join(check.reasons))
    return make_settings(backend="nspawn")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_claude_login_with_the_auth_vm_in_a_container(nspawn_settings: Settings) -> None:
    with (
        OAuthServer() as server,
        auth_controller(nspawn_settings, server, deadlines=None) as harness,
    ):
        web = harness.client("service")
        started = web.post("/api/auth/start", json={"userId": "u-1", "provider": "claude_code"})
        assert started.status_code == 201, started.text
        session = started.json()
        handle = harness.read(lambda: harness.vms.get(session["vmId"]))
        assert handle is not None and isinstance(handle.instance, NspawnInstance)
        leader = handle.instance.container_pid()
        assert leader is not None
        port = int(server.url.rsplit(":", 1)[1])
        server.serve_on(listen_in_netns(f"/proc/{leader}/ns/net", port))

        done = web.post(f"/api/auth/sessions/{session['id']}/code", json=answer_for(session))

        assert done.json()["phase"] == "authenticated", done.text
        assert harness.vm_row(session["vmId"]).state == VmState.STOPPED

        async def stored() -> str:
            async with harness.context.sessions() as db:
                record = await credentials.current(db, "u-1", "claude_code")
                assert record is not None
                files = credentials.open_files(harness.context.vault, record)
                return str(json.loads(files[0].data())["claudeAiOauth"]["accessToken"])

        assert harness.call(stored()) in {t.access_token for t in server.issued_tokens("claude")}


MODES = [
    ("claude_code", "paste_code"),
    ("codex", "localhost_callback"),
    ("codex", "device_code"),
    ("gemini_cli", "paste_code"),
]


def test_the_whole_flow_for_every_provider_and_mode_in_containers(
    nspawn_settings: Settings,
) -> None:
    """The seed's 14 steps in the offline demo, as `REMOTECLI_DEMO=1 make up` runs them:
    auth VMs and CLI VMs are containers of the golden image; then a prompt per provider."""
    from remotecli.testbed import approve_device, login
    from tests.support.controller import run_controller
    from tests.support.user import PASSWORD, USER

    settings = nspawn_settings.model_copy(update={"demo": True, "warm_pool_auth": 1})
    with run_controller(settings) as controller:
        web = controller.client()
        assert web.post("/api/users", json={"id": "ada"}).status_code == 201
        for provider, mode in MODES:
            started = web.post(
                "/api/auth/start", json={"userId": "ada", "provider": provider, "mode": mode}
            )
            assert started.status_code == 201, started.text
            session = started.json()
            if mode == "device_code":
                approve_device(session["loginUrl"], session["userCode"], USER, PASSWORD)
                done = _wait_ended(web, session["id"])
            else:
                outcome = login(session["loginUrl"], USER, PASSWORD)
                key = "callbackUrl" if mode == "localhost_callback" else "code"
                value = outcome.redirect_url if key == "callbackUrl" else outcome.pasted
                done = web.post(
                    f"/api/auth/sessions/{session['id']}/code", json={key: value}
                ).json()
            assert done["phase"] == "authenticated", (provider, mode, done)
            vm = web.get(f"/api/vms/{session['vmId']}").json()
            assert vm["state"] == "stopped", vm

        states = {c["provider"]: c["state"] for c in web.get("/api/users/ada/credentials").json()}
        assert states == dict.fromkeys(["claude_code", "codex", "gemini_cli"], "connected")
        for provider in ("claude_code", "codex", "gemini_cli"):
            text = prompt_text(web, "ada", provider, "hi")
            assert text == "You said: hi", (provider, text)
        cli_vms = [v for v in web.get("/api/vms").json()["vms"] if v["role"] == "cli"]
        assert [v["userId"] for v in cli_vms] == ["ada"]


def _wait_ended(web: httpx.Client, session_id: str) -> dict[str, object]:
    def ended() -> dict[str, object] | None:
        session: dict[str, object] = web.get(f"/api/auth/sessions/{session_id}").json()
        return session if session["ended"] else None

    return eventually(f"login {session_id} to end", ended, 60)
