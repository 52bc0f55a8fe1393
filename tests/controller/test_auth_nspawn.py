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

import pytest

from remotecli.controller import credentials
from remotecli.controller.models import VmState
from remotecli.controller.settings import Settings
from remotecli.testbed import OAuthServer
from remotecli.testbed.netns import listen_in_netns
from remotecli.vmm import hostcheck
from remotecli.vmm.nspawn import NspawnInstance
from tests.controller.auth_support import answer_for, auth_controller

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
