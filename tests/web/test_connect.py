"""Connect accounts in a real browser: every provider's login, end to end, against the test bed.

The user clicks Connect, watches the phases, opens the sign-in page in a new
tab (the test bed's authorize page stands in for the provider's), signs in,
pastes what it shows (the code, or the final address for Codex's browser
flow) and sees "Connected". Wrong pastes are refused before anything is
sent; Cancel ends a login at any step; API-key mode connects with no VM.
"""

from __future__ import annotations

import html
import re

import pytest
from playwright.sync_api import BrowserContext, Locator, Page, Request, Route, expect

from tests.support.user import PASSWORD, USER
from tests.web.dashboard import Dashboard

#: Codex's browser flow ends at the CLI's own listener, 127.0.0.1:1455.
CODEX_CALLBACK = "http://127.0.0.1:1455/**"
#: What a browser shows for it on the user's machine, where nothing listens there.
UNREACHABLE = "<!doctype html><title>127.0.0.1</title><p>This site can't be reached</p>"


def connect_page(dash: Dashboard, who: str = "user:ada") -> Page:
    """Signed in as ``who``; once the cards show their states (if there are cards: a
    service token sees the user picker first)."""
    dash.sign_in(who)
    page = dash.open("/remote-cli/auth")
    if who.startswith("user:"):
        expect(page.locator(".state").first).not_to_have_text("Checking…")
    return page


def card(page: Page, provider: str) -> Locator:
    return page.locator(f"#card-{provider}")


def start_login(dash: Dashboard, page: Page, provider: str, button: str = "Connect") -> Locator:
    """Click Connect; the panel takes the focus and shows the phases up to the sign-in link."""
    box = card(page, provider)
    box.get_by_role("button", name=button, exact=True).click()
    panel = box.locator(".panel")
    expect(panel).to_be_focused()
    expect(box.locator(".state")).to_have_text("Connecting…")
    phases = panel.get_by_role("list", name="Progress")
    expect(phases).to_contain_text("VM claimed")
    expect(phases).to_contain_text("Login started: sign-in link ready")
    expect(phases.locator("li").first).to_contain_text(re.compile(r"\+\d+(\.\d)? m?s"))
    dash.step(page, f"{provider}: phases and link")
    return box


def open_sign_in(dash: Dashboard, page: Page, box: Locator) -> Page:
    """The link opens a new tab (providers refuse frames): the test bed's page."""
    link = box.get_by_role("link", name=re.compile("sign-in page"))
    expect(link).to_have_attribute("target", "_blank")
    with page.expect_popup() as opened:
        link.click()
    popup = opened.value
    popup.wait_for_load_state()
    dash.step(popup, "provider's sign-in page")
    return popup


def sign_in_on_provider(dash: Dashboard, popup: Page) -> None:
    popup.get_by_label("Email").fill(USER)
    popup.get_by_label("Password").fill(PASSWORD)
    popup.get_by_role("button", name="Sign in").click()


def paste(dash: Dashboard, page: Page, box: Locator, value: str) -> None:
    box.locator(".paste input").fill(value)
    dash.step(page, "pasted")
    box.get_by_role("button", name="Send").click()


def expect_connected(dash: Dashboard, page: Page, box: Locator) -> None:
    expect(box.locator(".outcome")).to_contain_text("Connected.", timeout=30_000)
    expect(box.locator(".state")).to_have_text("Connected")
    expect(box.get_by_role("list", name="Progress")).to_contain_text(
        "Signed in: storing the credentials"
    )
    expect(box.locator(".expiry")).to_contain_text("Connected (signed in)")
    dash.step(page, "connected")


def code_login(dash: Dashboard, provider: str) -> None:
    page = connect_page(dash)
    box = start_login(dash, page, provider)
    expect(box.locator(".paste .hint")).to_be_visible()
    popup = open_sign_in(dash, page, box)
    sign_in_on_provider(dash, popup)
    code = popup.locator("#code").inner_text().strip()
    popup.close()
    paste(dash, page, box, code)
    expect_connected(dash, page, box)


def test_claude_code_paste_the_code(dash: Dashboard) -> None:
    code_login(dash, "claude_code")


def test_gemini_paste_the_code_and_the_policy_is_stated(dash: Dashboard) -> None:
    page = connect_page(dash)
    expect(card(page, "gemini_cli").locator(".note")).to_contain_text(
        "Google refuses it for individual accounts"
    )
    code_login(dash, "gemini_cli")


def unreachable_callback(browser: BrowserContext) -> None:
    """The user's browser is not in the VM: nothing it can reach listens on 1455.

    Here the fake backend's CLI does listen on this host's 127.0.0.1:1455, so
    the browser must not get there. A redirect inside a chain is not
    routable, so the sign-in's 302 becomes a page that navigates on (a new,
    routable navigation) to the address, which then "does not load".
    """

    def sign_in(route: Route) -> None:
        if route.request.method != "POST":
            route.continue_()
            return
        answer = route.fetch(max_redirects=0)
        location = answer.headers.get("location", "")
        if answer.status in (302, 303) and location.startswith("http://127.0.0.1:1455/"):
            refresh = f'<meta http-equiv="refresh" content="0;url={html.escape(location)}">'
            route.fulfill(status=200, body=refresh, content_type="text/html")
        else:
            route.fulfill(response=answer)

    browser.route("**/codex/oauth/authorize", sign_in)
    browser.route(
        CODEX_CALLBACK,
        lambda route: route.fulfill(status=200, body=UNREACHABLE, content_type="text/html"),
    )


def test_codex_browser_flow_paste_the_final_address(dash: Dashboard) -> None:
    unreachable_callback(dash.browser)
    page = connect_page(dash)
    box = start_login(dash, page, "codex")
    expect(box.locator(".paste .hint")).to_contain_text("http://127.0.0.1:1455/auth/callback?code=")
    popup = open_sign_in(dash, page, box)
    sign_in_on_provider(dash, popup)
    expect(popup).to_have_url(re.compile(r"^http://127\.0\.0\.1:1455/auth/callback\?code="))
    address = popup.url
    dash.step(popup, "the address the browser ended on")
    popup.close()
    paste(dash, page, box, address)
    expect_connected(dash, page, box)


def test_codex_device_code(dash: Dashboard) -> None:
    page = connect_page(dash)
    box = start_login(dash, page, "codex", button="Connect with a device code")
    user_code = box.locator(".user-code").inner_text().strip()
    assert re.fullmatch(r"[A-Z0-9]{4}-[A-Z0-9]{4,5}", user_code), user_code
    expect(box.locator(".paste")).to_have_count(0)  # nothing to paste: the page follows by itself
    popup = open_sign_in(dash, page, box)
    popup.get_by_label("Code").fill(user_code)
    popup.get_by_label("Email").fill(USER)
    popup.get_by_label("Password").fill(PASSWORD)
    popup.get_by_role("button", name="Continue").click()
    dash.step(popup, "device approved")
    popup.close()
    expect_connected(dash, page, box)


def expect_refused(
    dash: Dashboard, page: Page, box: Locator, field: Locator, refusals: dict[str, str]
) -> None:
    """Each value is refused on the page with its message; nothing reaches the API."""
    sent: list[str] = []

    def record(request: Request) -> None:
        if request.url.endswith("/code"):
            sent.append(request.url)

    page.on("request", record)
    for value, message in refusals.items():
        field.fill(value)
        box.get_by_role("button", name="Send").click()
        expect(box.get_by_role("alert")).to_contain_text(message)
        expect(field).to_have_attribute("aria-invalid", "true")
        expect(field).to_be_focused()
    dash.step(page, "refused")
    assert sent == []
    box.get_by_role("button", name="Cancel").click()
    expect(box.locator(".outcome")).to_contain_text("Cancelled.")


def test_a_paste_that_cannot_be_right_is_refused_before_sending(dash: Dashboard) -> None:
    page = connect_page(dash)
    box = start_login(dash, page, "claude_code")
    field = box.get_by_label("Code from the sign-in page")
    expect(field).to_have_accessible_description(re.compile("two parts joined by a #"))
    refusals = {
        "": "Paste the code first",
        "just-a-code": "two parts joined by one #",
        "https://claude.ai/oauth/code": "not an address",
        "abc#not-this-logins-state": "belongs to another sign-in",
        "abc def#x": "no spaces",
    }
    expect_refused(dash, page, box, field, refusals)


def test_codex_refuses_an_address_from_another_login(dash: Dashboard) -> None:
    page = connect_page(dash)
    box = start_login(dash, page, "codex")
    field = box.get_by_label("Address of the page you ended up on")
    refusals = {
        "not an address": "not an address",
        "http://evil.example:1455/auth/callback?code=x&state=y": "not the address the sign-in",
        "http://localhost:1457/auth/callback?code=x&state=y": "waits on port 1455",
        "http://localhost:1455/success?code=x&state=y": "not the callback page",
        "http://localhost:1455/auth/callback?state=y": "no code in it",
        "http://localhost:1455/auth/callback?code=x&state=old": "another sign-in",
    }
    expect_refused(dash, page, box, field, refusals)


def test_cancel_ends_a_login_waiting_for_the_user(dash: Dashboard) -> None:
    page = connect_page(dash)
    box = start_login(dash, page, "claude_code")
    with page.expect_response(re.compile(r"/api/auth/sessions/auth_\w+$")) as cancelled:
        box.get_by_role("button", name="Cancel").click()
    assert cancelled.value.json()["phase"] == "cancelled"
    expect(box.locator(".outcome")).to_contain_text("Cancelled.")
    expect(box.get_by_role("list", name="Progress")).to_contain_text("Cancelled")
    expect(box.get_by_role("link", name=re.compile("sign-in page"))).to_be_visible()
    expect(box.locator(".paste")).to_be_hidden()
    dash.step(page, "cancelled")
    box.get_by_role("button", name="Close").click()
    expect(box.locator(".panel")).to_be_hidden()
    expect(box.get_by_role("button", name="Connect", exact=True)).to_be_focused()
    expect(box.locator(".state")).to_have_text("Not connected")


def test_cancel_while_the_vm_is_still_being_claimed(dash: Dashboard) -> None:
    """Cancel before the start answered: the login is cancelled as soon as it has an id."""
    gate: list[Route] = []
    dash.browser.route("**/api/auth/start", lambda route: gate.append(route))
    page = connect_page(dash)
    box = card(page, "gemini_cli")
    box.get_by_role("button", name="Connect", exact=True).click()
    expect(box.get_by_role("list", name="Progress")).to_contain_text("Claiming a VM")
    box.get_by_role("button", name="Cancel").click()
    expect(box.locator(".outcome")).to_contain_text("Cancelling…")
    dash.step(page, "cancelling while claiming")
    with page.expect_response(re.compile(r"/api/auth/sessions/auth_\w+$")) as cancelled:
        gate[0].continue_()
    assert cancelled.value.json()["phase"] == "cancelled"
    expect(box.locator(".outcome")).to_contain_text("Cancelled.")
    expect(box.locator(".state")).to_have_text("Not connected")


def test_api_key_mode_connects_and_disconnect_forgets(dash: Dashboard) -> None:
    page = connect_page(dash)
    box = card(page, "codex")
    toggle = box.get_by_role("button", name="Use an API key")
    toggle.click()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    key = box.get_by_label("Codex CLI API key")
    expect(key).to_be_focused()
    key.fill("sk-test with-space")
    box.get_by_role("button", name="Save the key").click()
    expect(box.get_by_role("alert")).to_contain_text("no spaces")
    key.fill("sk-test-0123456789")
    box.get_by_role("button", name="Save the key").click()
    expect(box.locator(".state")).to_have_text("Connected")
    expect(box.locator(".expiry")).to_contain_text("with an API key")
    expect(box.locator(".card-status")).to_contain_text("Connected with an API key")
    dash.step(page, "connected with a key")
    assert "sk-test-0123456789" not in page.content()
    box.get_by_role("button", name="Disconnect").click()
    expect(box.locator(".state")).to_have_text("Not connected")
    expect(box.get_by_role("button", name="Disconnect")).to_be_hidden()


def test_an_expired_login_shows_expired_needs_login(dash: Dashboard) -> None:
    """The credentials API's state decides the card: expired → 'Expired — needs login'."""
    code_login(dash, "claude_code")
    page = dash.browser.pages[0]
    page.route(
        "**/api/users/ada/credentials",
        lambda route: route.fulfill(
            json=[
                {**c, "state": "expired", "expiresAt": "2020-01-01T00:00:00Z"}
                for c in route.fetch().json()
            ]
        ),
    )
    page.reload()
    box = card(page, "claude_code")
    expect(box.locator(".state")).to_have_text("Expired — needs login")
    expect(box.locator(".expiry")).to_contain_text("connect again")


def test_a_service_token_picks_or_creates_the_user(dash: Dashboard) -> None:
    dash.controller.client().post("/api/users", json={"id": "grace"})
    page = connect_page(dash, "service")
    expect(page.locator("#connect")).to_have_count(0)
    expect(page.locator("#known-users option")).to_have_count(1)
    page.get_by_label("New user id").fill("bob smith")
    page.get_by_role("button", name="Create user").click()
    expect(page.locator("#picker-error")).to_contain_text("no spaces")
    page.get_by_label("New user id").fill("bob")
    page.get_by_role("button", name="Create user").click()
    expect(page).to_have_url(dash.url + "/remote-cli/auth?user=bob")
    expect(page.locator(".lead")).to_contain_text("Accounts of bob")
    expect(card(page, "claude_code").locator(".state")).to_have_text("Not connected")
    page.get_by_label("User id", exact=True).fill("grace")
    page.get_by_label("User id", exact=True).press("Enter")
    expect(page).to_have_url(dash.url + "/remote-cli/auth?user=grace")


@pytest.mark.parametrize("width", [390])
def test_phone_width_is_one_column_and_keyboard_reaches_connect(
    dash: Dashboard, width: int
) -> None:
    page = connect_page(dash)
    page.set_viewport_size({"width": width, "height": 844})
    boxes = [card(page, p).bounding_box() for p in ("claude_code", "codex", "gemini_cli")]
    assert all(b is not None for b in boxes)
    lefts = {round(b["x"]) for b in boxes if b is not None}
    assert len(lefts) == 1, boxes  # one column
    assert all(b["width"] <= width for b in boxes if b is not None)
    page.keyboard.press("Tab")  # the skip link first
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    for _ in range(12):
        page.keyboard.press("Tab")
        focused = page.evaluate("document.activeElement.textContent.trim()")
        if focused == "Connect":
            break
    page.keyboard.press("Enter")
    expect(card(page, "claude_code").locator(".panel")).to_be_focused()
    expect(
        card(page, "claude_code").get_by_role("link", name=re.compile("sign-in page"))
    ).to_be_visible()


def test_the_connect_page_for_the_readme(dash: Dashboard, browser: BrowserContext) -> None:
    """One view of every state: Claude connected, Codex by API key, Gemini mid-login."""
    code_login(dash, "claude_code")
    page = dash.browser.pages[0]
    codex = card(page, "codex")
    codex.get_by_role("button", name="Use an API key").click()
    codex.get_by_label("Codex CLI API key").fill("sk-demo-key")
    codex.get_by_role("button", name="Save the key").click()
    expect(codex.locator(".state")).to_have_text("Connected")
    claude = card(page, "claude_code")
    claude.get_by_role("button", name="Close").click()
    gemini = start_login(dash, page, "gemini_cli")
    expect(gemini.locator(".paste")).to_be_visible()
    page.mouse.move(0, 0)
    dash.doc_screenshot(page, "connect")
    gemini.get_by_role("button", name="Cancel").click()
    expect(gemini.locator(".outcome")).to_contain_text("Cancelled.")
