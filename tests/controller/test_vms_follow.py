"""The VM page's API: following a console by byte offset, and what a VM's agent is doing."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from remotecli.controller.db.models import VmRole
from remotecli.controller.settings import Settings
from tests.support.controller import Controller, vm_controller


def _follow(admin: httpx.Client, vm_id: str, since: int) -> tuple[str, int, str]:
    response = admin.get(f"/api/vms/{vm_id}/console", params={"since": since})
    assert response.status_code == 200, response.text
    return (
        response.text,
        int(response.headers["X-Console-Offset"]),
        response.headers["X-Console-Live"],
    )


def test_a_console_is_followed_by_offset_one_complete_line_at_a_time(
    make_settings: Callable[..., Settings],
) -> None:
    with vm_controller(make_settings()) as ctl:
        admin = ctl.client()
        handle = ctl.call(ctl.vms.claim(VmRole.AUTH))
        path = handle.instance.console_path
        tail = admin.get(f"/api/vms/{handle.vm_id}/console")
        assert "agent.listening" in tail.text  # the fake VM's console is the agent's log
        start = int(tail.headers["X-Console-Offset"])
        assert (start, tail.headers["X-Console-Live"]) == (path.stat().st_size, "true")
        # From 0: the whole console, as the tail showed its end.
        whole, offset, _ = _follow(admin, handle.vm_id, 0)
        assert whole.endswith(tail.text) and offset == start

        with path.open("ab") as console:
            console.write(b"first line\n\x1b[1msecond\x1b[0m li")
        assert _follow(admin, handle.vm_id, start) == ("first line\n", start + 11, "true")
        with path.open("ab") as console:
            console.write(b"ne\n")
        # The half line was held back until its newline came; ANSI is stripped.
        text, offset, _ = _follow(admin, handle.vm_id, start + 11)
        assert (text, offset) == ("second line\n", path.stat().st_size)
        assert _follow(admin, handle.vm_id, offset) == ("", offset, "true")
        # An offset past the end (a stale page) reads nothing and says where the end is.
        assert _follow(admin, handle.vm_id, offset + 500) == ("", offset, "true")

        assert admin.delete(f"/api/vms/{handle.vm_id}").status_code == 200
        # A follower of a VM that went away is told so; the tail is the saved console.
        assert _follow(admin, handle.vm_id, offset) == ("", offset, "false")
        saved = admin.get(f"/api/vms/{handle.vm_id}/console")
        assert saved.headers["X-Console-Live"] == "false" and "second line" in saved.text
        refused = admin.get(f"/api/vms/{handle.vm_id}/console", params={"since": -1})
        assert refused.status_code == 422


def test_a_vms_agent_sessions_show_logins_without_their_urls_and_the_runs(
    world: Controller,
) -> None:
    admin = world.client()
    user = world.add_user("ada")
    world.connect(user, "claude_code")
    events = world.prompt(user, "claude_code", "hello")
    cli_vm = next(d["vmId"] for n, d in events if n == "run")
    started = world.client("service").post(
        "/api/auth/start", json={"userId": user, "provider": "gemini_cli"}
    )
    assert started.status_code == 201, started.text
    login = started.json()

    seen = admin.get(f"/api/vms/{login['vmId']}/sessions").json()
    assert (seen["live"], seen["agentError"], seen["runs"]) == (True, None, [])
    [session] = seen["sessions"]
    assert (session["provider"], session["phase"]) == ("gemini_cli", "awaiting_user")
    assert "oauthUrl" not in session and "userCode" not in session
    assert login["loginUrl"] not in admin.get(f"/api/vms/{login['vmId']}/sessions").text

    runs = admin.get(f"/api/vms/{cli_vm}/sessions").json()
    [recent] = runs["recentRuns"]
    assert (recent["provider"], recent["status"], recent["exitCode"]) == (
        "claude_code",
        "succeeded",
        0,
    )
    assert "hello" not in str(runs)
    assert world.client("service").delete(f"/api/auth/sessions/{login['id']}").status_code == 200

    service = world.client("service").get(f"/api/vms/{cli_vm}/sessions")
    assert (service.status_code, service.json()["code"]) == (403, "admin_required")
