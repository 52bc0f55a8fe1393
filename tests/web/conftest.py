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
import shutil
import tempfile
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import (
    BrowserContext,
    Playwright,
    sync_playwright,
)

from remotecli.controller.settings import Settings
from tests.support.controller import Controller, run_controller
from tests.web.dashboard import DESKTOP, DOC_SHOTS, Dashboard

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[2]
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


_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    return report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if exitstatus != 0 or not DOC_SHOTS:
        return
    DOC_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for name, png in DOC_SHOTS.items():
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
