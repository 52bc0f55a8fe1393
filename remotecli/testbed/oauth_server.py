"""A real OAuth 2.0 authorization server on loopback, imitating Claude, OpenAI and Google.

One server, three path prefixes (``/claude``, ``/codex``, ``/gemini``), each a
registered client with its own client id and redirect URIs (see
``testbed.clients``). Endpoints per provider::

    GET  /{p}/oauth/authorize     validate, show a login form (400 page on bad params)
    POST /{p}/oauth/authorize     check the password, 302 to redirect_uri?code=&state=
    POST /{p}/oauth/token         authorization_code (PKCE S256), refresh_token
                                  (rotation + reuse detection; Google does not rotate),
                                  device_code (RFC 8628); form or JSON body
    POST /{p}/oauth/device/code   start a device authorization
    GET|POST /{p}/device          where the user types the code and signs in
    GET  /{p}/userinfo            Bearer access token -> JSON, 401 JSON when invalid
    GET  /claude/oauth/code/callback, /gemini/authcode   pages that show the code
    GET  /healthz

Rules and state live in ``testbed.authority``. Stdlib only.

    with OAuthServer(users={"alice@example.com": "correct horse"}) as server:
        server.url  # http://127.0.0.1:PORT
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlencode, urlsplit

from remotecli.testbed import pages
from remotecli.testbed.authority import Authority
from remotecli.testbed.clients import PROVIDERS
from remotecli.testbed.records import Grant, IssuedToken, OAuthError

DEFAULT_USERS: dict[str, str] = {"alice@example.com": "correct horse"}
_MAX_BODY = 1 << 20


class OAuthServer:
    """The fake authorization server in a daemon thread; a context manager, ``stop`` idempotent."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        access_token_ttl: float = 3600.0,
        users: Mapping[str, str] | None = None,
        *,
        refresh_token_ttl: float = 30 * 24 * 3600.0,
        code_ttl: float = 600.0,
        device_code_ttl: float = 900.0,
        device_interval: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._host = host
        self._port = port
        self._users = dict(DEFAULT_USERS if users is None else users)
        self._settings = {
            "access_token_ttl": access_token_ttl,
            "refresh_token_ttl": refresh_token_ttl,
            "code_ttl": code_ttl,
            "device_code_ttl": device_code_ttl,
            "device_interval": device_interval,
        }
        self._clock = clock
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._authority: Authority | None = None
        self._lock = threading.Lock()
        self._extra: list[tuple[_Server, threading.Thread]] = []

    # --- lifecycle -------------------------------------------------------------

    def start(self) -> OAuthServer:
        with self._lock:
            if self._httpd is not None:
                return self
            httpd = _Server((self._host, self._port), _Handler)
            try:
                host, port = httpd.server_address[:2]
                url = f"http://{_url_host(str(host))}:{port}"
                httpd.authority = Authority(
                    base_url=url, users=self._users, clock=self._clock, **self._settings
                )
                httpd.base_url = url
                thread = threading.Thread(
                    target=httpd.serve_forever,
                    kwargs={"poll_interval": 0.05},
                    name=f"testbed-oauth-{port}",
                    daemon=True,
                )
                thread.start()
            except BaseException:
                httpd.server_close()
                raise
            self._httpd, self._thread, self._authority = httpd, thread, httpd.authority
            return self

    def serve_on(self, sock: socket.socket) -> Callable[[], None]:
        """Also serve, with the same state, on an already listening socket.

        For containers with a private network: a socket bound inside the
        container's network namespace *at this server's own port* makes the
        server reachable there at the very same URL, so the CLIs inside and
        the "browser" outside see identical addresses.
        """
        primary = self._httpd
        if primary is None:
            raise RuntimeError("start() the server before serve_on()")
        httpd = _Server(sock.getsockname()[:2], _Handler, bind_and_activate=False)
        httpd.socket.close()
        httpd.socket = sock
        httpd.authority, httpd.base_url = primary.authority, primary.base_url
        httpd.log, httpd.log_lock = primary.log, primary.log_lock
        thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        thread.start()
        with self._lock:
            self._extra.append((httpd, thread))

        def close() -> None:
            """Stop serving on that socket (its namespace is going away)."""
            with self._lock:
                if (httpd, thread) not in self._extra:
                    return
                self._extra.remove((httpd, thread))
            httpd.shutdown()
            httpd.server_close()
            thread.join(timeout=5)

        return close

    def stop(self) -> None:
        with self._lock:
            httpd, thread = self._httpd, self._thread
            self._httpd = self._thread = None
            extra, self._extra = self._extra, []
        for other, other_thread in extra:
            other.shutdown()
            other.server_close()
            other_thread.join(timeout=5)
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> OAuthServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._httpd is not None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        return self.authority.base_url

    @property
    def authority(self) -> Authority:
        if self._authority is None:
            raise RuntimeError("OAuthServer is not started: call start() or use it as `with`")
        return self._authority

    def provider_url(self, provider: str) -> str:
        return f"{self.url}/{provider}"

    # --- inspection for tests (see Authority for the details) -----------------------

    def issued_tokens(self, provider: str | None = None) -> list[IssuedToken]:
        return self.authority.issued_tokens(provider)

    def grants(self, provider: str | None = None) -> list[Grant]:
        return self.authority.grants(provider)

    def revoke_all(self, provider: str | None = None) -> int:
        return self.authority.revoke_all(provider)

    def expire_access_tokens(self, provider: str | None = None) -> int:
        return self.authority.expire_access_tokens(provider)

    def expire_refresh_tokens(self, provider: str | None = None) -> int:
        return self.authority.expire_refresh_tokens(provider)

    def expire_device_codes(self) -> None:
        self.authority.expire_device_codes()

    def pending_user_codes(self, provider: str) -> list[str]:
        return self.authority.pending_user_codes(provider)

    def request_log(self) -> list[tuple[str, str, int]]:
        """``(method, path, status)`` of every request served so far (no query strings)."""
        httpd = self._httpd
        if httpd is None:
            return []
        with httpd.log_lock:
            return list(httpd.log)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    authority: Authority
    base_url: str

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        bind_and_activate: bool = True,
    ) -> None:
        super().__init__(address, handler, bind_and_activate)
        self.log: list[tuple[str, str, int]] = []
        self.log_lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "remotecli-testbed/1"
    _GET: ClassVar[dict[str, str]] = {
        "oauth/authorize": "_authorize_get",
        "device": "_device_get",
        "userinfo": "_userinfo",
        "oauth/code/callback": "_code_page",
        "authcode": "_code_page",
    }
    _POST: ClassVar[dict[str, str]] = {
        "oauth/authorize": "_authorize_post",
        "oauth/token": "_token",
        "v1/oauth/token": "_token",  # Claude's real path
        "oauth/device/code": "_device_start",
        "device": "_device_post",
    }

    # --- dispatch ---------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch(self._GET)

    def do_POST(self) -> None:
        self._dispatch(self._POST)

    def _dispatch(self, table: Mapping[str, str]) -> None:
        parts = urlsplit(self.path)
        self._query = parts.query
        path = parts.path.rstrip("/") or "/"
        if path == "/healthz" and self.command == "GET":
            self._json(200, {"status": "ok", "providers": list(PROVIDERS)})
            return
        if path == "/" and self.command == "GET":
            self._html(200, pages.index_page(self.server.base_url, PROVIDERS))
            return
        provider, _, rest = path.lstrip("/").partition("/")
        method = table.get(rest) if provider in PROVIDERS else None
        own_page = {"oauth/code/callback": "claude", "authcode": "gemini"}.get(rest, provider)
        if method is None or own_page != provider:
            self._json(404, {"error": "not_found", "error_description": f"no route {path}"})
            return
        try:
            getattr(self, method)(provider)
        except OAuthError as exc:
            self._json(exc.status, exc.body())

    # --- authorization endpoint -------------------------------------------------

    def _authorize_get(self, provider: str) -> None:
        params = dict(parse_qsl(self._query, keep_blank_values=True))
        if provider == "claude" and self._query and "=" not in self._query:
            expanded = self.server.authority.expand_claude_short_link(self._query)
            if expanded is None:
                self._html(400, pages.error_page("This sign-in link is not valid."))
                return
            params = expanded
        try:
            request = self.server.authority.parse_authorize(provider, params)
        except OAuthError as exc:
            self._html(400, pages.error_page(f"{exc.error}: {exc.description}"))
            return
        self._html(200, pages.login_page(provider, request.form_fields()))

    def _authorize_post(self, provider: str) -> None:
        form = self._form()
        authority = self.server.authority
        try:
            request = authority.parse_authorize(provider, form)
        except OAuthError as exc:
            self._html(400, pages.error_page(f"{exc.error}: {exc.description}"))
            return
        email = form.get("username", "").strip()
        if not authority.check_password(email, form.get("password", "")):
            page = pages.login_page(
                provider, request.form_fields(), "Wrong email or password.", email
            )
            self._html(401, page)
            return
        code = authority.issue_code(request, email)
        sep = "&" if "?" in request.redirect_uri else "?"
        location = f"{request.redirect_uri}{sep}{urlencode({'code': code, 'state': request.state})}"
        self._send(302, b"", "text/plain", {"Location": location})

    def _code_page(self, provider: str) -> None:
        params = dict(parse_qsl(self._query))
        code = params.get("code", "")
        if not code:
            self._html(400, pages.error_page(params.get("error") or "No authorization code."))
            return
        shown = f"{code}#{params.get('state', '')}" if provider == "claude" else code
        self._html(200, pages.code_page(provider, shown))

    # --- token endpoint -----------------------------------------------------------

    def _token(self, provider: str) -> None:
        body = self.server.authority.token(provider, self._form())
        self._json(200, body)

    # --- device flow ----------------------------------------------------------------

    def _device_start(self, provider: str) -> None:
        self._json(200, self.server.authority.device_start(provider, self._form()))

    def _device_get(self, provider: str) -> None:
        prefill = dict(parse_qsl(self._query)).get("user_code", "")
        self._html(200, pages.device_page(provider, prefill))

    def _device_post(self, provider: str) -> None:
        form = self._form()
        code = form.get("user_code", "")
        approve = form.get("action", "approve") != "deny"
        try:
            self.server.authority.device_decide(
                provider, code, form.get("username", "").strip(), form.get("password", ""), approve
            )
        except OAuthError as exc:
            self._html(exc.status, pages.device_page(provider, code, exc.description))
            return
        done = "Device connected. You can close this window." if approve else "Request denied."
        self._html(200, pages.device_page(provider, done=done))

    # --- resource -------------------------------------------------------------------

    def _userinfo(self, provider: str) -> None:
        header = self.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            err = OAuthError("invalid_token", "Missing bearer token.", status=401)
        else:
            try:
                self._json(200, self.server.authority.userinfo(provider, token.strip()))
                return
            except OAuthError as exc:
                err = exc
        self._json(err.status, err.body(), {"WWW-Authenticate": f'Bearer error="{err.error}"'})

    # --- plumbing ---------------------------------------------------------------------

    def _form(self) -> dict[str, str]:
        """The request body as a flat dict: JSON object or form-urlencoded, like the real ones."""
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_BODY:
            raise OAuthError("invalid_request", "request body too large", status=413)
        raw = self.rfile.read(length) if length else b""
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype == "application/json":
            try:
                data = json.loads(raw or b"{}")
            except ValueError as exc:
                raise OAuthError("invalid_request", f"body is not JSON: {exc}") from exc
            if not isinstance(data, dict):
                raise OAuthError("invalid_request", "body must be a JSON object")
            return {str(k): _flat(v) for k, v in data.items() if v is not None}
        return dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))

    def _json(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        extra = {"Cache-Control": "no-store", "Pragma": "no-cache", **(headers or {})}
        self._send(status, json.dumps(body).encode(), "application/json", extra)

    def _html(self, status: int, html: str) -> None:
        self._send(status, html.encode(), "text/html; charset=utf-8", {"Cache-Control": "no-store"})

    def _send(
        self, status: int, body: bytes, ctype: str, headers: Mapping[str, str] | None = None
    ) -> None:
        self.send_response(status, HTTPStatus(status).phrase)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)
        with self.server.log_lock:
            self.server.log.append((self.command, urlsplit(self.path).path, status))

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: requests carry codes and tokens, and tests read ``request_log`` instead."""


def _flat(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return " ".join(str(v) for v in value)  # e.g. a scope list
    return json.dumps(value)
