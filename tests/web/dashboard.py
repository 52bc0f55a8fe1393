"""The dashboard under test: a browser page on the controller, its console watched, shot."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import (
    BrowserContext,
    ConsoleMessage,
    Page,
    ViewportSize,
)

from remotecli.controller.security import CSRF_HEADER
from tests.support.controller import Controller, new_token

ARTIFACTS = Path(__file__).parent / "artifacts"
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 844}
#: name → PNG bytes, written at the end of a passing session (``conftest.py``).
DOC_SHOTS: dict[str, bytes] = {}


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
            DOC_SHOTS[name + suffix] = page.screenshot(full_page=True)
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
