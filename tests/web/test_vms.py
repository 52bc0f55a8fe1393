"""The operators' VM pages in a real browser: the list, a VM's timeline, live console, destroy."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Page, expect

from remotecli.controller.settings import Settings
from tests.support.controller import Controller, run_controller
from tests.web.dashboard import Dashboard
from tests.web.ops_support import connect, service


@pytest.fixture
def controller(make_settings: Callable[..., Settings]) -> Iterator[Controller]:
    """The offline demo with one warm auth VM, so the list has a pooled VM from the start."""
    with run_controller(make_settings(demo=True, warm_pool_auth=1)) as running:
        yield running


def vm_rows(page: Page) -> list[tuple[str, str, str]]:
    """(role, user, state) of each row of the VM table."""
    rows = page.locator("#vms tbody tr[data-vm]")
    return [
        (r.locator("td").nth(2).inner_text(), r.locator("td").nth(3).inner_text(),
         r.get_attribute("data-state") or "")
        for r in rows.all()
    ]  # fmt: skip


def test_the_list_shows_warm_and_claimed_vms_live(dash: Dashboard) -> None:
    dash.sign_in("admin")
    page = dash.open("/remote-cli/vms")
    expect(page.locator("#system")).to_contain_text("fake")
    expect(page.locator("#system")).to_contain_text("disabled")  # the fake backend: no snapshot
    expect(page.locator("#system")).to_contain_text("auth: 1/1 ready")
    expect(page.locator('#vms tbody tr[data-state="ready"]')).to_have_count(1)
    dash.step(page, "warm VM")
    # A prompt claims a CLI VM for ada; the page shows it without a reload.
    dash.token("user:ada")
    connect(dash, "ada", "claude_code")
    assert (
        service(dash)
        .post("/api/prompts", json={"userId": "ada", "provider": "claude_code", "prompt": "hi"})
        .status_code
        == 200
    )
    claimed = page.locator('#vms tbody tr[data-state="claimed"]')
    expect(claimed).to_have_count(1, timeout=10_000)
    expect(claimed).to_contain_text("cli")
    expect(claimed).to_contain_text("ada")
    expect(claimed.locator(".badge.ok")).to_have_count(2)  # state and health once checked
    assert ("auth", "—", "ready") in vm_rows(page)
    # The finished login's auth VM is gone; with "Include ended VMs" it is listed as stopped.
    page.get_by_label("Include ended VMs").check()
    expect(page.locator('#vms tbody tr[data-state="stopped"]').first).to_contain_text("auth")
    page.get_by_label("Include ended VMs").uncheck()
    dash.step(page, "claimed")
    dash.doc_screenshot(page, "vms")


def test_a_vm_page_follows_the_console_shows_the_agent_and_destroys(dash: Dashboard) -> None:
    dash.sign_in("admin")
    admin = dash.controller.client()
    [warm] = admin.get("/api/vms").json()["vms"]
    page = dash.open("/remote-cli/vms")
    page.get_by_role("link", name=warm["id"]).click()
    expect(page).to_have_url(f"{dash.url}/remote-cli/vms/{warm['id']}")
    expect(page.locator("#vm-state")).to_have_text("ready")
    timeline = page.get_by_role("list", name="Readiness phases")
    expect(timeline.locator("li[data-phase=VMM_STARTED] .ms")).to_have_text(re.compile(r"\d+ ms"))
    expect(timeline.locator("li[data-phase=AGENT_READY] .ms")).to_have_text(re.compile(r"\d+ ms"))
    expect(timeline.locator("li[data-phase=KERNEL_BOOTED]")).to_contain_text("skipped: the fake")
    expect(page.locator("#boot-kind")).to_contain_text("Cold boot")
    expect(page.get_by_role("list", name="Claim trace")).to_contain_text("Not claimed")
    console = page.locator("#console")
    expect(console).to_contain_text('"event": "agent.listening"')
    expect(page.locator("#console-status")).to_have_text("Following…")
    expect(console).not_to_contain_text("/auth/gemini_cli")
    dash.step(page, "warm VM page")

    # A login claims this warm VM: the page follows its console and its agent's session.
    started = service(dash).post(
        "/api/auth/start", json={"userId": "ada", "provider": "gemini_cli"}
    )
    assert started.status_code == 201, started.text
    assert started.json()["vmId"] == warm["id"]
    expect(console).to_contain_text('"path": "/auth/gemini_cli"')
    expect(page.locator("#vm-state")).to_have_text("claimed")
    trace = page.get_by_role("list", name="Claim trace")
    expect(trace).to_contain_text("pool ok")
    logins = page.locator("#agent-logins tbody")
    expect(logins).to_contain_text("gemini_cli", timeout=10_000)
    expect(logins).to_contain_text("awaiting_user")
    assert started.json()["loginUrl"] not in page.content()  # the sign-in URL stays private
    dash.step(page, "claimed by a login")
    dash.doc_screenshot(page, "vm")

    page.get_by_role("button", name="Destroy…").click()
    expect(page.get_by_role("button", name="Cancel")).to_be_focused()
    page.keyboard.press("Enter")  # Cancel: nothing happens
    expect(page.get_by_role("group")).to_be_hidden()
    assert admin.get(f"/api/vms/{warm['id']}").json()["state"] == "claimed"
    page.get_by_role("button", name="Destroy…").click()
    page.get_by_role("button", name="Yes, destroy it").click()
    expect(page.locator("#vm-state")).to_have_text("stopped")
    expect(page.locator("#summary")).to_contain_text("deleted by admin")
    expect(page.get_by_role("button", name="Destroy…")).to_be_hidden()
    expect(page.locator("#console-status")).to_contain_text("The VM stopped")
    dash.step(page, "destroyed")
    assert admin.get(f"/api/vms/{warm['id']}").json()["state"] == "stopped"


def test_a_user_token_is_told_the_vm_pages_are_for_operators(dash: Dashboard) -> None:
    dash.sign_in("user:ada")
    page = dash.open("/remote-cli/vms")
    expect(page.get_by_role("alert")).to_have_text(re.compile("admin token"))
    expect(page.locator("#vms")).to_have_count(0)
