"""The user at a browser, as code: sign in on the fake provider and read what it shows.

``login`` opens an authorize URL, submits the login form and stops at the
redirect: a redirect to the CLI's own listener (Codex, ``127.0.0.1:1455``) is
returned as the URL the user would copy from the address bar, never
followed; a redirect to the provider's own code page (Claude ``code#state``,
Google's auth code) is followed and the code read off the page.
``approve_device`` enters a device-flow user code. urllib only.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import urlencode, urljoin, urlsplit

__all__ = ["BrowserError", "BrowserOutcome", "approve_device", "login"]


class BrowserError(Exception):
    """The provider refused (wrong password, bad link, unknown code): what its page said."""

    def __init__(self, message: str, status: int | None = None, url: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.url = url


@dataclass(frozen=True, slots=True)
class BrowserOutcome:
    """Where the login ended."""

    #: The redirect the browser would go to next when it leaves the provider
    #: (the CLI's loopback callback), e.g. ``http://127.0.0.1:1455/auth/callback?code=..&state=..``.
    redirect_url: str | None = None
    #: The code the provider's page shows (Claude ``code#state``; Google's auth code).
    code: str | None = None

    @property
    def pasted(self) -> str:
        """What the user pastes back: the code if a page showed one, else the redirect URL."""
        value = self.code if self.code is not None else self.redirect_url
        assert value is not None
        return value


class _Page(HTMLParser):
    """Forms (action, inputs) and the text of the ``code`` / ``error`` / ``done`` elements."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[tuple[str, dict[str, str]]] = []
        self.texts: dict[str, str] = {}
        self._capture: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append((a.get("action", ""), {}))
        elif tag == "input" and self.forms and a.get("name"):
            self.forms[-1][1][a["name"]] = a.get("value", "")
        if a.get("id") in ("code", "error", "done"):
            self._capture = a["id"]
            self.texts[a["id"]] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag in ("code", "p"):
            self._capture = None

    def handle_data(self, data: str) -> None:
        if self._capture is not None:
            self.texts[self._capture] += data


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # surface 3xx as HTTPError: we decide what to follow


def _opener() -> urllib.request.OpenerDirector:
    # No proxies: the test bed is on loopback and an HTTP(S)_PROXY in the
    # environment must not see its codes.
    return urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())


def _fetch(url: str, data: dict[str, str] | None, timeout: float) -> tuple[int, str, str | None]:
    """``(status, body, location)`` without following redirects."""
    if urlsplit(url).scheme not in ("http", "https"):
        raise BrowserError(f"not a web URL: {url}", url=url)
    body = urlencode(data).encode() if data is not None else None
    request = urllib.request.Request(url, data=body)  # noqa: S310 - scheme checked above
    try:
        with _opener().open(request, timeout=timeout) as resp:
            return resp.status, resp.read().decode("utf-8", "replace"), None
    except urllib.error.HTTPError as exc:
        text = exc.read().decode("utf-8", "replace")
        return exc.code, text, exc.headers.get("Location")
    except OSError as exc:
        raise BrowserError(f"cannot open {url}: {exc}", url=url) from exc


def _parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    page.close()
    return page


def _refusal(status: int, html: str, url: str) -> BrowserError:
    text = _parse(html).texts.get("error") or html[:200]
    return BrowserError(text.strip(), status=status, url=url)


def login(
    authorize_url: str, username: str, password: str, timeout: float = 10.0
) -> BrowserOutcome:
    """Sign in at ``authorize_url``; return the redirect (Codex) or the code shown (Claude, Gemini).

    Raises ``BrowserError`` with the provider's own words when it refuses.
    """
    status, html, _ = _fetch(authorize_url, None, timeout)
    if status != 200:
        raise _refusal(status, html, authorize_url)
    forms = _parse(html).forms
    if not forms:
        raise BrowserError("the sign-in page has no form", status=status, url=authorize_url)
    action, fields = forms[0]
    fields.update({"username": username, "password": password})
    target = urljoin(authorize_url, action)
    status, html, location = _fetch(target, fields, timeout)
    if status not in (301, 302, 303, 307) or not location:
        raise _refusal(status, html, target)
    redirect = urljoin(target, location)
    if urlsplit(redirect).netloc != urlsplit(target).netloc:
        return BrowserOutcome(redirect_url=redirect)
    status, html, _ = _fetch(redirect, None, timeout)
    code = _parse(html).texts.get("code")
    if status != 200 or not code:
        raise _refusal(status, html, redirect)
    return BrowserOutcome(code=code.strip())


def approve_device(
    verification_uri: str,
    user_code: str,
    username: str,
    password: str,
    timeout: float = 10.0,
    deny: bool = False,
) -> None:
    """Enter ``user_code`` at ``verification_uri`` and sign in (or press Cancel with ``deny``)."""
    status, html, _ = _fetch(verification_uri, None, timeout)
    if status != 200:
        raise _refusal(status, html, verification_uri)
    forms = _parse(html).forms
    if not forms:
        raise BrowserError("the device page has no form", status=status, url=verification_uri)
    action, fields = forms[0]
    fields.update(
        {
            "user_code": user_code,
            "username": username,
            "password": password,
            "action": "deny" if deny else "approve",
        }
    )
    target = urljoin(verification_uri, action)
    status, html, _ = _fetch(target, fields, timeout)
    if status != 200 or "done" not in _parse(html).texts:
        raise _refusal(status, html, target)
