"""The whole flow with every auth VM and CLI VM a real QEMU VM restored from the golden snapshot.

As ``REMOTECLI_BACKEND=qemu REMOTECLI_DEMO=1 make up`` runs it: the controller
boots the test image once in the background, saves the golden snapshot, and
every claim after that restores a clone (its own token and identity). The
guests reach the test bed through QEMU's guest forward (``context.wiring.guest_services``);
their network is otherwise restricted. Under software emulation (this host)
the golden boot costs ~20 s; each restore well under a second.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from typing import Any

import pytest

from remotecli.controller.settings import Settings
from remotecli.testbed import login
from remotecli.vmm.qemu.backend import QEMU
from tests.support.controller import run_controller
from tests.support.poll import eventually
from tests.support.streams import prompt_text
from tests.support.user import PASSWORD, USER

#: A cold machine builds the test image and its VM artifacts inside this test.
pytestmark = pytest.mark.timeout(900)

MODES = [
    ("claude_code", "paste_code"),
    ("codex", "localhost_callback"),
    ("gemini_cli", "paste_code"),
]


@pytest.fixture
def qemu_settings(make_settings: Callable[..., Settings]) -> Settings:
    if shutil.which(QEMU) is None or shutil.which("qemu-img") is None:
        pytest.skip(f"no {QEMU} / qemu-img on PATH (apt-get install qemu-system-x86 qemu-utils)")
    # No warm pool: on 2 cores a pool VM's cold boot would race the golden one.
    # The VM tests' 0.2 s health probes suit host processes, not an emulated
    # guest busy with a login (it missed two and was replaced in CI): a
    # production-like interval, whose probe may take up to 5 s.
    return make_settings(
        backend="qemu", demo=True, warm_pool_auth=0, health_interval_seconds=5.0,
        health_failures_allowed=3,
    )  # fmt: skip


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_logins_and_prompts_run_in_restored_qemu_vms(qemu_settings: Settings) -> None:
    with run_controller(qemu_settings) as controller:
        web = controller.client()

        def snapshot() -> dict[str, Any] | None:
            status: dict[str, Any] = web.get("/api/vms").json()["snapshot"]
            assert status["state"] != "failed", status
            return status if status["state"] == "ready" else None

        golden = eventually("the golden snapshot", snapshot, timeout=300)
        assert {"KERNEL_BOOTED", "INIT_STARTED", "AGENT_READY"} <= set(golden["bootPhases"])
        assert web.post("/api/users", json={"id": "ada"}).status_code == 201

        for provider, mode in MODES:
            started = web.post(
                "/api/auth/start", json={"userId": "ada", "provider": provider, "mode": mode}
            )
            assert started.status_code == 201, started.text
            session = started.json()
            vm = web.get(f"/api/vms/{session['vmId']}").json()
            assert (vm["backend"], vm["origin"]) == ("qemu", "restore"), vm
            assert list(vm["phases"]["durations"]) == [
                "VMM_STARTED", "STATE_RESTORED", "AGENT_READY"
            ]  # fmt: skip
            outcome = login(session["loginUrl"], USER, PASSWORD)
            key = "callbackUrl" if mode == "localhost_callback" else "code"
            value = outcome.redirect_url if key == "callbackUrl" else outcome.pasted
            done = web.post(f"/api/auth/sessions/{session['id']}/code", json={key: value}).json()
            assert done.get("phase") == "authenticated", (provider, mode, done)

        states = {c["provider"]: c["state"] for c in web.get("/api/users/ada/credentials").json()}
        assert states == dict.fromkeys(["claude_code", "codex", "gemini_cli"], "connected")
        for provider, _ in MODES:
            assert prompt_text(web, "ada", provider, "hi") == "You said: hi", provider
        cli_vms = [v for v in web.get("/api/vms").json()["vms"] if v["role"] == "cli"]
        assert [(v["userId"], v["origin"]) for v in cli_vms] == [("ada", "restore")]
