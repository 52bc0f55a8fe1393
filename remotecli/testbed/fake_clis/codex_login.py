"""``codex login``: the browser flow's loopback listener, device code, API key, status.

Mirrors codex-cli 0.171.0 (tests/fixtures/real_cli/codex_login_*): everything
on stderr; listener on 127.0.0.1:1455, else 1457, after ``GET /cancel`` to a
stale one; ``/auth/callback`` with a wrong state answers ``400 State
mismatch`` and keeps waiting; ``/cancel`` ends the login ("Login cancelled");
``/success`` ends it "successfully" (the real one says so even when nothing
was exchanged: only auth.json proves a login). Stdlib only.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from remotecli.testbed.clients import CODEX_CALLBACK_PORTS, CODEX_CLIENT_ID, CODEX_SCOPES
from remotecli.testbed.fake_clis.codex_auth import auth_path, save_api_key, save_tokens
from remotecli.testbed.fake_clis.common import (
    TransportError,
    err,
    http,
    read_json,
)
from remotecli.testbed.tokens import pkce_challenge, pkce_verifier, random_token

VERSION = "0.171.0"
_SUCCESS_PAGE = (
    b"<!doctype html><html><body><p>Signed in to Codex. You may close this window.</p>"
    b"<p>(remote-cli test bed)</p></body></html>"
)
_TAGLINE = "OpenAI's command-line coding agent"
_ERROR_PAGE = "<!doctype html><html><body><h1>Sign-in failed</h1><p>{}</p></body></html>"


@dataclass
class _Login:
    server: str
    port: int
    state: str
    verifier: str
    done: threading.Event = field(default_factory=threading.Event)
    outcome: str | None = None  # None = success, else the "Error logging in: ..." text

    @property
    def redirect_uri(self) -> str:
        return f"http://127.0.0.1:{self.port}/auth/callback"

    def finish(self, outcome: str | None) -> None:
        if not self.done.is_set():
            self.outcome = outcome
            self.done.set()


class _Listener(HTTPServer):
    login: _Login


class _Callback(BaseHTTPRequestHandler):
    server: _Listener
    server_version = "tiny-http (Rust)"
    sys_version = ""

    def do_GET(self) -> None:
        login = self.server.login
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if parts.path == "/auth/callback":
            self._callback(login, query)
        elif parts.path == "/success":
            self._reply(200, _SUCCESS_PAGE, "text/html; charset=utf-8")
            login.finish(None)
        elif parts.path == "/cancel":
            self._reply(200, b"Login cancelled", None)
            login.finish("Login cancelled")
        else:
            self._reply(404, b"Not Found", "text/plain; charset=UTF-8")

    def _callback(self, login: _Login, query: dict[str, str]) -> None:
        if query.get("state") != login.state:
            self._reply(400, b"State mismatch", "text/plain; charset=UTF-8")
            return
        if "error" in query:
            message = f"Sign-in failed: {query.get('error_description') or query['error']}"
            err(f"OAuth callback error: {message}\n")
            self._reply(200, _ERROR_PAGE.format(message).encode(), "text/html; charset=utf-8")
            login.finish(message)
            return
        code = query.get("code")
        if not code:
            body = b"Missing authorization code. Sign-in could not be completed."
            self._reply(400, body, "text/plain; charset=UTF-8")
            return
        problem = _exchange(login, code)
        if problem is not None:
            err(f"Token exchange error: {problem}\n")
            page = _ERROR_PAGE.format(f"Token exchange failed: {problem}")
            self._reply(200, page.encode(), "text/html; charset=utf-8")
            login.finish(f"Token exchange failed: {problem}")
            return
        success = f"http://localhost:{login.port}/success?" + urlencode(
            {"needs_setup": "false", "codex_streamlined_login": "true"}
        )
        # Like the real 0.171.0: auth.json is saved, but the CLI keeps running
        # until the browser follows this redirect to /success (a remote user's
        # browser never does; the agent sees auth.json and stops the CLI).
        self._reply(302, b"", None, {"Location": success})

    def _reply(
        self, status: int, body: bytes, ctype: str | None, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        if ctype:
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet, like the real listener."""


def _exchange(login: _Login, code: str) -> str | None:
    """Exchange the code (PKCE) and save auth.json; the error text on failure."""
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": login.redirect_uri,
        "client_id": CODEX_CLIENT_ID,
        "code_verifier": login.verifier,
    }
    url = f"{login.server}/codex/oauth/token"
    try:
        resp = http("POST", url, form=form)
    except TransportError as exc:
        return str(exc)
    if resp.status != 200 or not isinstance(resp.body, dict):
        return f"token endpoint returned status {resp.status} {resp.reason}"
    save_tokens(resp.body)
    return None


def _bind(port: int) -> _Listener | None:
    try:
        return _Listener(("127.0.0.1", port), _Callback)
    except OSError:
        return None


def _cancel_stale(port: int) -> None:
    """Ask a stale ``codex login`` on ``port`` to give the port up (GET /cancel), as codex does."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(f"GET /cancel HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
            sock.settimeout(1)
            sock.recv(256)
    except OSError:
        pass


def _listen() -> _Listener | None:
    primary, fallback = CODEX_CALLBACK_PORTS
    listener = _bind(primary)
    if listener is not None:
        return listener
    _cancel_stale(primary)
    deadline = time.monotonic() + 2.0  # codex retries the primary port ~2 s before falling back
    while time.monotonic() < deadline:
        listener = _bind(primary)
        if listener is not None:
            return listener
        time.sleep(0.1)
    return _bind(fallback)


def browser_login(server: str) -> int:
    listener = _listen()
    if listener is None:
        err("Error logging in: Address already in use (os error 98)\n")
        return 1
    port = int(listener.server_address[1])
    verifier = pkce_verifier()
    login = _Login(server, port, random_token(32), verifier)
    listener.login = login
    url = f"{server}/codex/oauth/authorize?" + urlencode(
        [
            ("response_type", "code"),
            ("client_id", CODEX_CLIENT_ID),
            ("redirect_uri", login.redirect_uri),
            ("code_challenge", pkce_challenge(verifier)),
            ("code_challenge_method", "S256"),
            ("state", login.state),
            ("scope", " ".join(CODEX_SCOPES)),
            ("id_token_add_organizations", "true"),
            ("codex_cli_simplified_flow", "true"),
            ("originator", "codex_cli_rs"),
        ]
    )
    err(
        f"Starting local login server on http://localhost:{port}.\n"
        "If your browser did not open, navigate to this URL to authenticate:\n\n"
        f"{url}\n\n"
        "On a remote or headless machine? Use `codex login --device-auth` instead.\n"
    )
    thread = threading.Thread(target=listener.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        login.done.wait()
    finally:
        listener.shutdown()
        listener.server_close()
    if login.outcome is not None:
        err(f"Error logging in: {login.outcome}\n")
        return 1
    err("Successfully logged in\n")
    return 0


def _style(text: str, code: str) -> str:
    return f"\x1b[{code}m{text}\x1b[0m" if sys.stderr.isatty() else text


def device_login(server: str) -> int:
    try:
        resp = http(
            "POST",
            f"{server}/codex/oauth/device/code",
            form={"client_id": CODEX_CLIENT_ID, "scope": " ".join(CODEX_SCOPES)},
        )
    except TransportError as exc:
        err(f"Error logging in: {exc}\n")
        return 1
    if resp.status != 200 or not isinstance(resp.body, dict):
        err(f"Error logging in: device code request failed with status {resp.status}\n")
        return 1
    start = resp.body
    minutes = int(start.get("expires_in", 900)) // 60
    err(
        f"\nWelcome to Codex [v{_style(VERSION, '2')}]\n"
        f"{_style(_TAGLINE, '2')}\n\n"
        "Follow these steps to sign in with ChatGPT using device code authorization:\n\n"
        "1. Open this link in your browser and sign in to your account\n"
        f"   {_style(start['verification_uri'], '94')}\n\n"
        f"2. Enter this one-time code {_style(f'(expires in {minutes} minutes)', '2')}\n"
        f"   {_style(start['user_code'], '94')}\n\n"
        "Continue only if you started this login in Codex. If a website or another person "
        "gave you this code, cancel.\n"
    )
    interval = float(start.get("interval", 5))
    while True:
        time.sleep(interval)
        try:
            poll = http(
                "POST",
                f"{server}/codex/oauth/token",
                form={
                    "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
                    "device_code": start["device_code"],
                    "client_id": CODEX_CLIENT_ID,
                },
            )
        except TransportError as exc:
            err(f"Error logging in with device code: {exc}\n")
            return 1
        body = poll.body if isinstance(poll.body, dict) else {}
        if poll.status == 200:
            save_tokens(body)
            err("Successfully logged in\n")
            return 0
        error = body.get("error")
        if error == "authorization_pending":
            continue
        if error == "slow_down":
            interval += 5
            continue
        reason = {
            "expired_token": f"device code expired after {minutes} minutes",
            "access_denied": "device authorization was denied",
        }.get(str(error), f"{error}: {body.get('error_description', '')}")
        err(f"Error logging in with device code: {reason}\n")
        return 1


def api_key_login() -> int:
    if sys.stdin.isatty():
        err(
            "--with-api-key expects the API key on stdin. Try piping it, e.g. "
            "`printenv OPENAI_API_KEY | codex login --with-api-key`.\n"
        )
        return 1
    err("Reading API key from stdin...\n")
    key = sys.stdin.read().strip()
    if not key:
        err("No API key provided via stdin.\n")
        return 1
    save_api_key(key)
    err("Successfully logged in\n")
    return 0


def login_status() -> int:
    data = read_json(auth_path())
    if data is None:
        err("Not logged in\n")
        return 1
    if data.get("tokens"):
        err("Logged in using ChatGPT\n")
        return 0
    key = str(data.get("OPENAI_API_KEY") or "")
    if key:
        shown = "***" if len(key) <= 13 else f"{key[:8]}***{key[-5:]}"
        err(f"Logged in using an API key - {shown}\n")
        return 0
    err("Not logged in\n")
    return 1


def logout() -> int:
    path = auth_path()
    if path.exists():
        path.unlink()
        err("Successfully logged out\n")
    else:
        err("Not logged in\n")
    return 0
