"""Signing in, the cookie and its CSRF rule, redirects and the layout, in a real browser."""

from __future__ import annotations

import re

import httpx
from playwright.sync_api import expect

from remotecli.controller.security import CSRF_HEADER, SESSION_COOKIE
from tests.support.controller import Controller
from tests.web.dashboard import Dashboard


def test_a_page_without_the_cookie_sends_the_browser_to_sign_in_and_back(dash: Dashboard) -> None:
    """/ → /remote-cli/auth → sign-in (next kept) → paste a token → back on the page asked for."""
    page = dash.open("/remote-cli/playground")
    expect(page).to_have_url(re.compile(r"/remote-cli/login\?next=%2Fremote-cli%2Fplayground$"))
    dash.step(page, "sign-in page")
    expect(page.get_by_label("API token")).to_be_focused()
    page.get_by_label("API token").fill(dash.token("user:ada"))
    page.keyboard.press("Enter")
    expect(page).to_have_url(dash.url + "/remote-cli/playground")
    dash.step(page, "signed in")
    nav = page.get_by_role("navigation", name="Main")
    # A user token does not see the operators' VMs page.
    expect(nav.get_by_role("link")).to_have_text(["Connect accounts", "Playground"])
    expect(nav.get_by_role("link", name="Playground")).to_have_attribute("aria-current", "page")
    cookie = next(c for c in dash.browser.cookies() if c["name"] == SESSION_COOKIE)
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["secure"]) == (True, "Strict", False)
    assert dash.token("user:ada") not in page.content()

    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(dash.url + "/remote-cli/login")
    assert [c for c in dash.browser.cookies() if c["name"] == SESSION_COOKIE] == []
    page.goto(dash.url + "/")
    expect(page).to_have_url(re.compile(r"/remote-cli/login\?next=%2Fremote-cli%2Fauth$"))


def test_a_wrong_token_is_refused_on_the_sign_in_page(dash: Dashboard) -> None:
    dash.expect_console(r"status of 401")  # the browser logs the API's 401 itself
    page = dash.open("/remote-cli/login")
    page.get_by_label("API token").fill("rcli_user_not-a-real-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("this API token is not valid")
    expect(page.get_by_label("API token")).to_have_attribute("aria-invalid", "true")
    dash.step(page, "refused")
    assert [c for c in dash.browser.cookies() if c["name"] == SESSION_COOKIE] == []


def test_an_admin_sees_every_page_in_the_nav(dash: Dashboard) -> None:
    dash.sign_in("admin")
    page = dash.open("/remote-cli/auth")
    expect(page.get_by_role("navigation", name="Main").get_by_role("link")).to_have_text(
        ["Connect accounts", "VMs", "Playground"]
    )


def test_next_only_goes_to_a_path_on_this_site(controller: Controller) -> None:
    web = controller.client(token=None)
    for evil in ("https://evil.example/", "//evil.example/", "/\\evil.example"):
        page = web.get("/remote-cli/login", params={"next": evil})
        assert 'data-next="/remote-cli/auth"' in page.text, evil
    page = web.get("/remote-cli/login", params={"next": "/remote-cli/vms?x=1"})
    assert 'data-next="/remote-cli/vms?x=1"' in page.text


def test_the_cookie_authenticates_the_api_and_unsafe_methods_need_the_csrf_header(
    controller: Controller,
) -> None:
    admin = controller.client()
    assert admin.post("/api/users", json={"id": "ada"}).status_code == 201
    browser = httpx.Client(base_url=controller.url)
    controller.clients.open.append(browser)
    signed = browser.post("/api/session", json={"token": controller.admin_token})
    assert signed.status_code == 403 and signed.json()["code"] == "csrf_required"
    signed = browser.post(
        "/api/session", json={"token": controller.admin_token}, headers={CSRF_HEADER: "1"}
    )
    assert signed.status_code == 200, signed.text
    assert signed.json() == {"kind": "admin", "userId": None}
    assert controller.admin_token not in signed.text
    assert browser.get("/api/users/ada/credentials").status_code == 200  # GET: the cookie alone
    refused = browser.delete("/api/users/ada/credentials/codex")
    assert (refused.status_code, refused.json()["code"]) == (403, "csrf_required")
    allowed = browser.delete("/api/users/ada/credentials/codex", headers={CSRF_HEADER: "1"})
    assert (allowed.status_code, allowed.json()["code"]) == (404, "no_credentials")
    # A bearer header is not a browser: no CSRF header needed.
    assert admin.delete("/api/users/ada/credentials/codex").json()["code"] == "no_credentials"
    assert browser.delete("/api/session", headers={CSRF_HEADER: "1"}).status_code == 204
    assert browser.get("/api/users/ada/credentials").status_code == 401


def test_static_files_are_only_the_shipped_ones(controller: Controller) -> None:
    web = controller.client(token=None)
    assert web.get("/remote-cli/static/app.css").status_code == 200
    for name in ("..%2Froutes.py", "routes.py", "%2E%2E%2F%2E%2E%2Fpyproject.toml"):
        assert web.get(f"/remote-cli/static/{name}").status_code == 404, name
