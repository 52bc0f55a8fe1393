"""The dashboard's own defences (docs/SECURITY.md H1 to H3): headers on every page, no inline
script in any template, no script that turns strings into HTML."""

from __future__ import annotations

import re

import httpx

from remotecli.controller.security import SESSION_COOKIE
from remotecli.web.routes import HERE, SECURITY_HEADERS, STATIC_DIR
from tests.support.controller import Controller

PAGES = ["/remote-cli/auth", "/remote-cli/vms", "/remote-cli/playground", "/remote-cli/login"]
#: <script> with a body, an inline event handler, or a javascript: URL.
INLINE_SCRIPT = re.compile(
    r"<script(?![^>]*\bsrc=)[^>]*>|\son[a-z]+\s*=|javascript:", re.IGNORECASE
)
#: DOM sinks that parse a string as HTML.
HTML_SINKS = re.compile(r"\.(innerHTML|outerHTML)\s*=|insertAdjacentHTML|document\.write")


def test_every_page_sends_the_security_headers(controller: Controller) -> None:
    cookies = {SESSION_COOKIE: controller.admin_token}
    with httpx.Client(base_url=controller.url, cookies=cookies, timeout=30) as client:
        for path in PAGES:
            response = client.get(path)
            assert response.status_code == 200, (path, response.status_code)
            for name, value in SECURITY_HEADERS.items():
                assert response.headers.get(name) == value, (path, name)
            assert not INLINE_SCRIPT.search(response.text), path
            assert controller.admin_token not in response.text, path


def test_no_template_has_inline_script() -> None:
    templates = sorted((HERE / "templates").glob("*.html"))
    assert templates
    found = [
        f"{t.name}: {m.group(0)}" for t in templates for m in INLINE_SCRIPT.finditer(t.read_text())
    ]
    assert found == []


def test_no_script_builds_html_from_strings() -> None:
    scripts = sorted(STATIC_DIR.glob("*.js"))
    assert scripts
    found = [
        f"{s.name}:{n}: {line.strip()}"
        for s in scripts
        for n, line in enumerate(s.read_text().splitlines(), 1)
        if HTML_SINKS.search(line)
    ]
    assert found == [], "set text (textContent) or build nodes; never parse strings as HTML"
