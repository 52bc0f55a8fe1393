"""The dashboard in a real browser: Debian's Chromium driven by Playwright, the real controller.

Fixtures, by lifecycle stage:

- ``controller``: the real controller (uvicorn, SQLite) in the offline demo:
  the test bed's OAuth server and fake CLIs stand in for the providers, VMs
  run on the fake backend (real agent processes, fast).
- ``browser``: a fresh Chromium profile (``--user-data-dir``) per test.
- ``dash``: both, plus tokens, signing in, the console watch and the steps.

Every console error or uncaught exception on a dashboard page fails the test
(``dash.expect_console`` allows one the test provokes on purpose). Every
``dash.step`` takes a full-page screenshot; when the test fails they are
written to ``tests/web/artifacts/<test>/`` with the last view of every open
page. ``dash.doc_screenshot`` keeps a picture for README.md: written to
``docs/screenshots/`` only when the whole session passed.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import (
    BrowserContext,
    ConsoleMessage,
    Page,
    Playwright,
    ViewportSize,
    sync_playwright,
)

from remotecli.controller.security import CSRF_HEADER
from remotecli.controller.settings import Settings
from tests.support.controller import Controller, new_token, run_controller

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(__file__).parent / "artifacts"
DOC_SCREENSHOTS = REPO / "docs" / "screenshots"
# A closed network: without these Chromium's background traffic (updates,
# sync, QUIC probes) fails noisily and slowly.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 844}


_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()
#: name → PNG bytes, written at the end of a passing session.
_DOC_SHOTS: dict[str, bytes] = {}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    return report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if exitstatus != 0 or not _DOC_SHOTS:
        return
    DOC_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for name, png in _DOC_SHOTS.items():
        (DOC_SCREENSHOTS / f"{name}.png").write_bytes(png)


# -- the controller -----------------------------------------------------------------------------


@pytest.fixture
def database_url(state_dir: Path) -> str:
    return f"sqlite+aiosqlite:///{state_dir / 'remotecli.db'}"


@pytest.fixture
def controller(make_settings: Callable[..., Settings]) -> Iterator[Controller]:
    """The whole controller in the offline demo, every service, on the fake backend."""
    with run_controller(make_settings(demo=True)) as running:
        yield running


# -- the browser --------------------------------------------------------------------------------


@pytest.fixture
def playwright() -> Iterator[Playwright]:
    if not CHROMIUM.exists():
        pytest.skip(f"Debian's chromium is not installed ({CHROMIUM}); `make test` installs it")
    with sync_playwright() as driver:
        yield driver


@pytest.fixture
def browser(playwright: Playwright) -> Iterator[BrowserContext]:
    profile = Path(tempfile.mkdtemp(prefix="rcli-chromium-"))
    # No speculative connections: a preconnected, idle socket to a CLI's
    # single-threaded callback listener (Codex's 1455 on this host, with the
    # fake backend) would hold it until the relay's request times out.
    (profile / "Default").mkdir()
    (profile / "Default" / "Preferences").write_text(
        json.dumps({"net": {"network_prediction_options": 2}})
    )
    context = playwright.chromium.launch_persistent_context(
        str(profile),
        executable_path=str(CHROMIUM),
        headless=True,
        args=CHROMIUM_ARGS,
        viewport=DESKTOP,
    )
    context.set_default_timeout(20_000)
    try:
        yield context
    finally:
        context.close()
        shutil.rmtree(profile, ignore_errors=True)


@dataclass
class Dashboard:
    controller: Controller
    browser: BrowserContext
    steps: list[tuple[str, bytes]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    expected: list[re.Pattern[str]] = field(default_factory=list)
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.controller.url

    # -- tokens and signing in ------------------------------------------------------------------

    def token(self, who: str = "admin") -> str:
        """An ``admin``, ``service`` or ``user:<id>`` token (the user is created)."""
        if who == "admin":
            return self.controller.admin_token
        if who not in self.tokens:
            self.tokens[who] = new_token(self.controller.client(), who)
        return self.tokens[who]

    def sign_in(self, who: str = "admin") -> None:
        """Sign this browser in through the API (the cookie lands in the browser's jar)."""
        response = self.browser.request.post(
            f"{self.url}/api/session",
            data={"token": self.token(who)},
            headers={CSRF_HEADER: "1"},
        )
        assert response.status == 200, response.text()

    def open(self, path: str) -> Page:
        page = self.browser.pages[0] if self.browser.pages else self.browser.new_page()
        page.goto(self.url + path)
        return page

    # -- evidence --------------------------------------------------------------------------------

    def step(self, page: Page, name: str) -> None:
        """Record a step: its screenshot is saved if the test fails."""
        self.steps.append((name, page.screenshot(full_page=True)))

    def expect_console(self, pattern: str) -> None:
        """A console error the test provokes on purpose (e.g. a 401 from a wrong token)."""
        self.expected.append(re.compile(pattern))

    def doc_screenshot(self, page: Page, name: str) -> None:
        """``docs/screenshots/<name>.png`` and ``<name>-phone.png``, if the session passes."""
        for suffix, size in (("", DESKTOP), ("-phone", PHONE)):
            page.set_viewport_size(size)
            page.wait_for_timeout(100)  # let the layout settle after the resize
            _DOC_SHOTS[name + suffix] = page.screenshot(full_page=True)
        page.set_viewport_size(DESKTOP)

    def _watch(self, page: Page) -> None:
        def ours() -> bool:
            return page.url.startswith(self.url)

        def console(message: ConsoleMessage) -> None:
            if message.type == "error" and ours():
                self._error(f"console error on {page.url}: {message.text} ({message.location})")

        def page_error(error: Exception) -> None:
            if ours():
                self._error(f"uncaught exception on {page.url}: {error}")

        page.on("console", console)
        page.on("pageerror", page_error)

    def _error(self, text: str) -> None:
        if not any(p.search(text) for p in self.expected):
            self.errors.append(text)

    def save_artifacts(self, test_name: str) -> Path:
        out = ARTIFACTS / re.sub(r"[^A-Za-z0-9_.-]+", "_", test_name)
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        for n, (name, png) in enumerate(self.steps, 1):
            slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-")
            (out / f"{n:02d}-{slug}.png").write_bytes(png)
        for n, page in enumerate(self.browser.pages):
            try:
                page.screenshot(path=str(out / f"last-page{n}.png"), full_page=True)
            except Exception as exc:  # a crashed page must not hide the test's own failure
                (out / f"last-page{n}.txt").write_text(f"no screenshot: {exc}\n")
        if self.errors:
            (out / "console-errors.txt").write_text("\n".join(self.errors) + "\n")
        return out


@pytest.fixture
def dash(
    request: pytest.FixtureRequest, controller: Controller, browser: BrowserContext
) -> Iterator[Dashboard]:
    dashboard = Dashboard(controller, browser)
    for page in browser.pages:
        dashboard._watch(page)
    browser.on("page", dashboard._watch)
    yield dashboard
    reports = request.node.stash.get(_REPORTS, {})
    failed = any(r.failed for r in reports.values())
    if failed or dashboard.errors:
        where = dashboard.save_artifacts(request.node.name)
        print(f"\nscreenshots of every step: {where}")
    assert dashboard.errors == [], "errors in the browser console:\n" + "\n".join(dashboard.errors)
