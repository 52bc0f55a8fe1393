"""What a browser may do with the controller: the cookie's Secure flag (A8) and no CORS (A10).

The controller under uvicorn trusts ``X-Forwarded-Proto`` from 127.0.0.1 only
(uvicorn's ``forwarded_allow_ips`` default): that is how a TLS-terminating
proxy on the same host tells it the browser used https.
"""

from __future__ import annotations

import httpx

from remotecli.controller.security import CSRF_HEADER, SESSION_COOKIE
from tests.support.controller import Controller

EVIL = "https://evil.example"


def set_cookie_attributes(response: httpx.Response) -> list[str]:
    """The attributes of the session cookie's ``Set-Cookie``, lower-cased (``secure``, ...)."""
    [header] = [
        h for h in response.headers.get_list("set-cookie") if h.startswith(f"{SESSION_COOKIE}=")
    ]
    return [part.strip().split("=", 1)[0].lower() for part in header.split(";")[1:]]


def sign_in(controller: Controller, **headers: str) -> httpx.Response:
    browser = controller.client(token=None)
    response = browser.post(
        "/api/session",
        json={"token": controller.admin_token},
        headers={CSRF_HEADER: "1", **headers},
    )
    assert response.status_code == 200, response.text
    return response


def test_the_session_cookie_is_secure_exactly_when_the_browser_came_over_https(
    controller: Controller,
) -> None:
    plain = set_cookie_attributes(sign_in(controller))
    assert "secure" not in plain, f"plain http cannot keep a Secure cookie, yet got {plain}"
    assert {"httponly", "samesite", "max-age", "path"} <= set(plain), plain

    https = set_cookie_attributes(sign_in(controller, **{"X-Forwarded-Proto": "https"}))
    assert "secure" in https, f"signed in over https (via the proxy), the cookie had {https}"
    assert {"httponly", "samesite"} <= set(https), https


def test_no_cors_preflight_is_answered_and_no_answer_allows_another_origin(
    controller: Controller,
) -> None:
    anonymous = controller.client(token=None)
    admin = controller.client()
    cors = [
        # The preflight a browser sends before a cross-origin request with the CSRF header.
        anonymous.options(
            "/api/users",
            headers={
                "Origin": EVIL,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": f"{CSRF_HEADER},content-type",
            },
        ),
        anonymous.options(
            "/api/session",
            headers={"Origin": EVIL, "Access-Control-Request-Method": "POST"},
        ),
        # Simple requests a page on another origin could send: the answers must not be
        # readable there (no Access-Control-Allow-Origin).
        anonymous.get("/api/health", headers={"Origin": EVIL}),
        admin.get("/api/users", headers={"Origin": EVIL}),
        anonymous.post("/api/session", json={"token": "x"}, headers={"Origin": EVIL}),
    ]
    for response in cors:
        allowing = {
            k: v for k, v in response.headers.items() if k.lower().startswith("access-control-")
        }
        assert allowing == {}, (
            f"{response.request.method} {response.request.url.path} from {EVIL} answered "
            f"{response.status_code} with CORS headers {allowing}"
        )
    preflights = cors[:2]
    assert [r.status_code for r in preflights] == [405, 405], [
        (r.status_code, r.text[:200]) for r in preflights
    ]
