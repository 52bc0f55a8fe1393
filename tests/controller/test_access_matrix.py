"""The access matrix: every route of the app by every kind of caller, asserted.

The routes are read from the app itself (``create_app`` with the default
routers), so a new route without a row in ``MATRIX`` fails the test until
someone decides who may call it.

Columns (callers):

- ``none``: no token at all; ``wrong``: a well-formed token the controller never issued;
- ``own``: alice's user token, path/body user ``alice``;
- ``other``: alice's user token, path/body user ``bob`` (or bob's login session);
- ``service`` and ``admin`` tokens (path/body user ``bob``).

Cells: ``OK`` means "got past authentication and authorisation": any answer
but 401/403 (and no 5xx), e.g. 404 for a placeholder id or 422 for a body
that fails validation on purpose, so that routes that start real work
(logins, prompts) start nothing. A denied caller always gets a *valid* body:
the refusal must not depend on bad input. Otherwise a cell is the error
``code`` that must come back with its status (401 or 403), ``unknown_session``
(404: another user's login answers like a missing one), or ``PAGE`` (a
dashboard page: bearer tokens do not open it, it redirects to the sign-in page).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from starlette.routing import BaseRoute, Route

from remotecli.controller.security import CSRF_HEADER, SAFE_METHODS, SESSION_COOKIE
from remotecli.controller.settings import Settings
from remotecli.server.app import create_app
from remotecli.web.routes import PREFIX
from tests.support.controller import Controller, new_token, run_controller

CALLERS = ("none", "wrong", "own", "other", "service", "admin")
OK = "ok"
PAGE = "page"
STATUS_BY_CODE = {
    "token_required": 401,
    "invalid_token": 401,
    "admin_required": 403,
    "forbidden_user": 403,
    "csrf_required": 403,
    "unknown_session": 404,
}

#: Placeholders valid in format (vm ids are ``vm_<16 hex>``), so authorisation decides.
VM_ID = "vm_0123456789abcdef"
SESSION_ID = "auth_0123456789abcdef"
TOKEN_ID = "tok_0123456789abcdef"
WRONG_TOKEN = "rcli_admin_" + "x" * 43


def _cells(own: str, other: str, service: str, admin: str) -> dict[str, str]:
    return {"none": "token_required", "wrong": "invalid_token", "own": own, "other": other,
            "service": service, "admin": admin}  # fmt: skip


PUBLIC = dict.fromkeys(CALLERS, OK)
#: Pages read the session cookie only; a bearer header (right or wrong) is not a sign-in.
PAGES = dict.fromkeys(CALLERS, PAGE)
ANY_TOKEN = _cells(OK, OK, OK, OK)
ADMIN_ONLY = _cells("admin_required", "admin_required", "admin_required", OK)
ADMIN_OR_SERVICE = _cells("admin_required", "admin_required", OK, OK)
#: A user token for its own user; service and admin tokens for anyone.
USER_SCOPED = _cells(OK, "forbidden_user", OK, OK)
#: Login sessions: the ``other`` column asks for bob's real session with alice's token.
SESSION_SCOPED = _cells(OK, "unknown_session", OK, OK)

Body = Callable[[str], Any]


@dataclass(frozen=True)
class Entry:
    cells: dict[str, str]
    #: A valid body for user ``u`` (sent to every caller that must be refused).
    body: Body | None = None
    #: A body that fails validation (422), sent to allowed callers instead of ``body``.
    probe: Body | None = None
    headers: dict[str, str] = field(default_factory=dict)


def _prompt(u: str) -> dict[str, Any]:
    return {"userId": u, "provider": "codex", "prompt": "hello"}


def _perspectives(u: str) -> dict[str, Any]:
    return {"userId": u, "providers": ["codex", "gemini_cli"], "prompt": "hello"}


MATRIX: dict[tuple[str, str], Entry] = {
    # -- public ---------------------------------------------------------------------------
    ("GET", "/api/health"): Entry(PUBLIC),
    ("POST", "/api/session"): Entry(PUBLIC, body=lambda u: {}),  # 422: no token in the body
    ("DELETE", "/api/session"): Entry(PUBLIC, headers={CSRF_HEADER: "1"}),
    ("GET", "/openapi.json"): Entry(PUBLIC),
    ("GET", "/docs"): Entry(PUBLIC),
    ("GET", "/docs/oauth2-redirect"): Entry(PUBLIC),
    ("GET", "/redoc"): Entry(PUBLIC),
    ("GET", "/"): Entry(PUBLIC),
    ("GET", f"{PREFIX}/login"): Entry(PUBLIC),
    ("GET", PREFIX + "/static/{name}"): Entry(PUBLIC),
    ("GET", "/favicon.ico"): Entry(PUBLIC),
    # -- dashboard pages (cookie only; see test_the_session_cookie_...) ---------------------
    ("GET", f"{PREFIX}/auth"): Entry(PAGES),
    ("GET", f"{PREFIX}/vms"): Entry(PAGES),
    ("GET", PREFIX + "/vms/{vm_id}"): Entry(PAGES),
    ("GET", f"{PREFIX}/playground"): Entry(PAGES),
    # -- session, users, tokens ---------------------------------------------------------------
    ("GET", "/api/session"): Entry(ANY_TOKEN),
    ("POST", "/api/users"): Entry(
        ADMIN_OR_SERVICE, body=lambda u: {"id": "carol"}, probe=lambda u: {"id": "-bad"}
    ),
    ("GET", "/api/users"): Entry(ADMIN_OR_SERVICE),
    ("GET", "/api/users/{user_id}"): Entry(USER_SCOPED),
    ("POST", "/api/tokens"): Entry(
        ADMIN_ONLY, body=lambda u: {"kind": "service"}, probe=lambda u: {"kind": "nope"}
    ),
    ("GET", "/api/tokens"): Entry(ADMIN_ONLY),
    ("DELETE", "/api/tokens/{token_id}"): Entry(ADMIN_ONLY),  # admin: 404 for the placeholder
    # -- credentials (codex: nobody has any, so an allowed DELETE is a 404) ------------------
    ("GET", "/api/users/{user_id}/credentials"): Entry(USER_SCOPED),
    ("DELETE", "/api/users/{user_id}/credentials/{provider}"): Entry(USER_SCOPED),
    # -- logins: never start one (422 for allowed callers) -----------------------------------
    ("POST", "/api/auth/start"): Entry(
        USER_SCOPED,
        body=lambda u: {"userId": u, "provider": "claude_code"},
        probe=lambda u: {"userId": u},
    ),
    ("GET", "/api/auth/sessions/{session_id}"): Entry(SESSION_SCOPED),
    ("GET", "/api/auth/sessions/{session_id}/events"): Entry(SESSION_SCOPED),
    ("POST", "/api/auth/sessions/{session_id}/code"): Entry(
        SESSION_SCOPED, body=lambda u: {"code": "abc#def"}, probe=lambda u: {"code": "x" * 9000}
    ),
    ("DELETE", "/api/auth/sessions/{session_id}"): Entry(SESSION_SCOPED),
    # -- prompts: never run one (422 for allowed callers) ------------------------------------
    ("POST", "/api/prompts"): Entry(
        USER_SCOPED, body=_prompt, probe=lambda u: {**_prompt(u), "prompt": ""}
    ),
    ("POST", "/api/perspectives"): Entry(
        USER_SCOPED, body=_perspectives, probe=lambda u: {**_perspectives(u), "providers": []}
    ),
    # -- VM operations and metrics ------------------------------------------------------------
    ("GET", "/api/vms"): Entry(ADMIN_ONLY),
    ("GET", "/api/vms/{vm_id}"): Entry(ADMIN_ONLY),
    ("GET", "/api/vms/{vm_id}/console"): Entry(ADMIN_ONLY),
    ("GET", "/api/vms/{vm_id}/sessions"): Entry(ADMIN_ONLY),
    ("DELETE", "/api/vms/{vm_id}"): Entry(ADMIN_ONLY),
    ("GET", "/metrics"): Entry(ADMIN_ONLY),
}


def _walk(routes: list[BaseRoute], found: set[tuple[str, str]]) -> None:
    for route in routes:
        if isinstance(route, Route):  # APIRoute too
            found.update((m, route.path) for m in route.methods or () if m != "HEAD")
            continue
        # FastAPI >= 0.16x keeps an included router whole (``_IncludedRouter``); create_app
        # includes every router without a prefix, so its routes' paths are the app's.
        included = getattr(route, "original_router", None)
        assert included is not None, f"the access matrix cannot read {route!r}: teach _walk"
        _walk(included.routes, found)


def app_routes() -> list[tuple[str, str]]:
    """Every (method, path) the app serves with its default routers (HEAD aside)."""
    app = create_app(Settings(environment="test"))
    found: set[tuple[str, str]] = set()
    _walk(app.routes, found)
    # The OpenAPI schema must agree (it is what clients see).
    for path, operations in app.openapi()["paths"].items():
        for method in operations:
            assert (method.upper(), path) in found, f"{method.upper()} {path} only in OpenAPI"
    return sorted(found, key=lambda mp: (mp[1], mp[0]))


def test_every_route_has_a_row_in_the_access_matrix() -> None:
    routes = app_routes()
    missing = [f"add {m} {p} to the access matrix" for m, p in routes if (m, p) not in MATRIX]
    assert not missing, "\n".join(missing)
    gone = [f"{m} {p}" for m, p in MATRIX if (m, p) not in routes]
    assert not gone, f"the access matrix lists routes the app no longer has: {gone}"
    for (method, path), entry in MATRIX.items():
        assert set(entry.cells) == set(CALLERS), f"{method} {path}: one cell per caller"


@dataclass
class World:
    running: Controller
    tokens: dict[str, str | None]
    bob_session: str

    def request(
        self, method: str, path: str, *, token: str | None, cookie: str | None = None,
        headers: dict[str, str] | None = None, body: Any = None,
    ) -> httpx.Response:  # fmt: skip
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        if cookie is not None:  # a header, not a jar: DELETE /api/session must not clear it
            sent["Cookie"] = f"{SESSION_COOKIE}={cookie}"
        client = self.running.client(None)
        kwargs: dict[str, Any] = {"headers": sent, "follow_redirects": False}
        if body is not None:
            kwargs["json"] = body
        return client.request(method, path, **kwargs)


@pytest.fixture
def world(make_settings: Callable[..., Settings]) -> Iterator[World]:
    with run_controller(make_settings()) as running:
        admin = running.client()
        alice = new_token(admin, "user:alice")
        new_token(admin, "user:bob")
        service = new_token(admin, "service")
        # bob's login session, made without a VM (API-key mode): the ``other`` column's target.
        started = running.client(service).post(
            "/api/auth/start",
            json={"userId": "bob", "provider": "claude_code", "mode": "api_key",
                  "apiKey": "sk-ant-api03-matrix"},
        )  # fmt: skip
        assert started.status_code == 201, started.text
        tokens: dict[str, str | None] = {
            "none": None, "wrong": WRONG_TOKEN, "own": alice, "other": alice,
            "service": service, "admin": running.admin_token,
        }  # fmt: skip
        yield World(running, tokens, started.json()["id"])


def _path(template: str, caller: str, bob_session: str) -> str:
    user = "alice" if caller == "own" else "bob"
    session = bob_session if caller == "other" else SESSION_ID
    return template.format(
        user_id=user,
        vm_id=VM_ID,
        session_id=session,
        provider="codex",
        name="app.css",
        token_id=TOKEN_ID,
    )


def _check(response: httpx.Response, expected: str, where: str) -> None:
    status = response.status_code
    if expected == OK:
        assert status not in (401, 403) and status < 500, f"{where}: {status} {response.text}"
    elif expected == PAGE:
        location = response.headers.get("location", "")
        assert status == 303 and location.startswith(f"{PREFIX}/login"), f"{where}: {status}"
    else:
        got = (status, response.json().get("code"))
        assert got == (STATUS_BY_CODE[expected], expected), f"{where}: {got} {response.text}"
        assert response.json()["message"], where


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_every_route_answers_every_caller_as_the_matrix_says(world: World) -> None:
    failures = []
    for (method, template), entry in MATRIX.items():
        for caller in CALLERS:
            expected = entry.cells[caller]
            path = _path(template, caller, world.bob_session)
            user = "alice" if caller == "own" else "bob"
            make = entry.probe if expected == OK and entry.probe is not None else entry.body
            where = f"{method} {path} as {caller} (expected {expected})"
            response = world.request(
                method, path, token=world.tokens[caller], headers=entry.headers,
                body=make(user) if make is not None else None,
            )  # fmt: skip
            try:
                _check(response, expected, where)
            except AssertionError as exc:
                failures.append(str(exc))
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_session_cookie_needs_the_csrf_header_on_every_unsafe_route(world: World) -> None:
    """An admin's cookie without ``X-Remotecli-Csrf: 1`` changes nothing, anywhere."""
    admin = world.tokens["admin"]
    unsafe = [(m, p) for m, p in MATRIX if m not in SAFE_METHODS]
    assert unsafe
    for method, template in unsafe:
        entry = MATRIX[(method, template)]
        path = _path(template, "admin", world.bob_session)
        body = entry.body("bob") if entry.body is not None else None
        if method == "POST" and template == "/api/session":
            body = {"token": admin}  # a valid sign-in: the header alone must refuse it
        response = world.request(method, path, token=None, cookie=admin, body=body)
        _check(response, "csrf_required", f"{method} {path} with the cookie, no CSRF header")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_session_cookie_opens_pages_and_reads_like_its_token(world: World) -> None:
    alice = world.tokens["own"]
    for (method, template), entry in MATRIX.items():
        if entry.cells["own"] != PAGE:
            continue
        path = _path(template, "own", world.bob_session)
        assert world.request(method, path, token=None, cookie=alice).status_code == 200, path
    for cookie, code in ((None, "token_required"), (WRONG_TOKEN, "invalid_token")):
        response = world.request("GET", "/api/session", token=None, cookie=cookie)
        _check(response, code, f"GET /api/session with cookie {cookie!r}")
    signed_in = world.request(
        "POST", "/api/session", token=None, headers={CSRF_HEADER: "1"}, body={"token": WRONG_TOKEN}
    )
    _check(signed_in, "invalid_token", "POST /api/session with a token never issued")
    who = world.request("GET", "/api/session", token=None, cookie=alice).json()
    assert who == {"kind": "user", "userId": "alice"}
    _check(
        world.request("GET", "/api/users/bob", token=None, cookie=alice),
        "forbidden_user", "GET /api/users/bob with alice's cookie",
    )  # fmt: skip
    _check(
        world.request("GET", "/api/vms", token=None, cookie=alice),
        "admin_required", "GET /api/vms with alice's cookie",
    )  # fmt: skip
