"""Codex CLI (``codex``): localhost-callback and device-code login, ``auth.json``, exec --json.

Facts (shared/research/providers.md, checked against the pinned package):
``codex login`` prints "Starting local login server on http://localhost:1455."
and the authorize URL on stderr, and waits on 127.0.0.1:1455 (fallback 1457)
for ``/auth/callback?code=...&state=...``. The port, path and state come from
the URL's ``redirect_uri`` and ``state``: the relay forwards a pasted callback
only when all three match. ``codex login --device-auth`` prints a link and a
one-time code valid for 15 minutes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import urlsplit

from remotecli.providers.base import (
    CallbackTarget,
    CredentialFile,
    InvalidCode,
    LoginCommand,
    LoginMode,
    LoginView,
    PromptCommand,
    PromptOptions,
    SeedFile,
    UnsupportedLoginMode,
    last_line_with,
    query_param,
)
from remotecli.providers.events import StreamParser
from remotecli.providers.stream.codex import CodexStreamParser

SERVER_MARKER = "Starting local login server on"
DEVICE_URL_MARKER = "Open this link in your browser"
DEVICE_CODE_MARKER = "Enter this one-time code"
SUCCEEDED = "Successfully logged in"
FAILURES = ("Token exchange failed", "Login failed", "Error logging in", "Error:")

_URL = re.compile(r"https?://[^\s\"'<>]+")
_USER_CODE = re.compile(r"\b([A-Z0-9]{4,}-[A-Z0-9]{4,})\b")

_SANDBOX = {
    "read-only": "read-only",
    "workspace-write": "workspace-write",
    "full-access": "danger-full-access",
}


def _complete_urls(text: str) -> list[str]:
    """URLs followed by something (a URL at the very end may still be growing)."""
    return [m.group(0) for m in _URL.finditer(text) if m.end() < len(text)]


class Codex:
    name = "codex"
    display_name = "Codex CLI"
    executable = "codex"
    npm_package = "@openai/codex"
    npm_version = "0.171.0"
    login_modes: tuple[LoginMode, ...] = (
        LoginMode.LOCALHOST_CALLBACK,
        LoginMode.DEVICE_CODE,
        LoginMode.API_KEY,
    )
    credential_files: tuple[CredentialFile, ...] = (CredentialFile(".codex/auth.json"),)
    scrub_env: tuple[str, ...] = ("CODEX_API_KEY", "OPENAI_API_KEY")
    api_key_env = "CODEX_API_KEY"

    def seed_files(self, mode: LoginMode) -> tuple[SeedFile, ...]:
        return ()

    def login_command(self, mode: LoginMode) -> LoginCommand:
        if mode is LoginMode.LOCALHOST_CALLBACK:
            return LoginCommand(
                mode=mode,
                argv=("codex", "login"),
                deadline_seconds=600.0,
                instructions=(
                    "Open the link and sign in with ChatGPT. Your browser then tries to open "
                    "a page on this machine that does not load: copy the whole address from "
                    "the address bar (it starts with http://127.0.0.1:1455/auth/callback) "
                    "and paste it here."
                ),
            )
        if mode is LoginMode.DEVICE_CODE:
            return LoginCommand(
                mode=mode,
                argv=("codex", "login", "--device-auth"),
                # The one-time code expires after 15 minutes.
                deadline_seconds=900.0,
                instructions=(
                    "Open the link, sign in with ChatGPT and enter the one-time code. "
                    "Device login must be enabled in your ChatGPT security settings. "
                    "Nothing to paste back: this page updates by itself."
                ),
            )
        raise UnsupportedLoginMode(f"Codex has no {mode.value} login command")

    def read_login(self, screen: str, links: Sequence[str] = ()) -> LoginView:
        authorize = [u for u in _complete_urls(screen) if "/oauth/authorize" in u]
        url = authorize[-1] if authorize else None
        user_code = None
        if url is None and DEVICE_CODE_MARKER in screen:
            after_link = screen.split(DEVICE_URL_MARKER)[-1]
            urls = _complete_urls(after_link)
            url = urls[0] if urls else None
            codes = _USER_CODE.findall(screen.split(DEVICE_CODE_MARKER)[-1])
            user_code = codes[0] if codes else None
        callback = None
        state = query_param(url, "state") if url else None
        redirect = query_param(url, "redirect_uri") if url else None
        if redirect and state:
            parts = urlsplit(redirect)
            if parts.hostname in ("localhost", "127.0.0.1") and parts.port:
                callback = CallbackTarget(port=parts.port, path=parts.path, state=state)
        failure = None
        for needle in FAILURES:
            failure = last_line_with(screen, needle)
            if failure:
                break
        return LoginView(
            url=url,
            user_code=user_code,
            callback=callback,
            state=state,
            failure=failure,
            succeeded=SUCCEEDED in screen,
        )

    def format_code(self, code: str, view: LoginView) -> str:
        raise InvalidCode(
            "Codex does not read a pasted code: paste the whole localhost callback URL "
            "from the address bar instead."
        )

    def prompt_command(self, prompt: str, options: PromptOptions) -> PromptCommand:
        argv = ["codex", "exec", "--json", "--skip-git-repo-check"]
        argv += ["--sandbox", _SANDBOX[options.permission]]
        if options.model:
            argv += ["--model", options.model]
        argv += [*options.extra_args, "--", prompt]
        return PromptCommand(argv=tuple(argv))

    def stream_parser(self) -> StreamParser:
        return CodexStreamParser()
