"""Gemini CLI (``gemini``): NO_BROWSER paste-code login in a TTY, ``~/.gemini`` files.

Facts (shared/research/providers.md, checked against the pinned package):
there is no login subcommand. With ``security.auth.selectedType =
"oauth-personal"`` in ``~/.gemini/settings.json`` and ``NO_BROWSER=true`` the
interactive CLI (which needs a TTY) prints "Please visit the following URL to
authorize the application:", the URL, then "Enter the authorization code: ".
A wrong code makes it print a NEW URL with a NEW state and ask again, so the
URL is re-read on every retry. It does not exit after a successful login (it
goes on into its TUI): the agent sees the credential files appear and stops it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from remotecli.providers.base import (
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
    urls_after,
)
from remotecli.providers.events import StreamParser
from remotecli.providers.stream.gemini_cli import GeminiStreamParser

URL_MARKER = "Please visit the following URL to authorize the application:"
CODE_PROMPT = "Enter the authorization code:"
# "Failed to authenticate with authorization code:request to ... failed, reason: ..."
CODE_FAILED = "Failed to authenticate with authorization code"
FATAL = "Error authenticating:"
SUCCEEDED = "Authentication succeeded"

_APPROVAL = {
    "read-only": "default",
    "workspace-write": "auto_edit",
    "full-access": "yolo",
}

# Since 2026-06-18 Google refuses this client for individual accounts.
POLICY_NOTE = (
    "Google sign-in works for organisation accounts (Gemini Code Assist Standard or "
    "Enterprise); Google refuses it for individual accounts since 2026-06-18. Individual "
    "users: connect with a Gemini API key instead."
)


def _settings(selected_type: str) -> str:
    return (
        json.dumps(
            {
                "security": {
                    "auth": {"selectedType": selected_type},
                    # The VM's workspace is the user's own; a trust dialog would
                    # block every headless run ("untrusted folder", exit 55).
                    "folderTrust": {"enabled": False},
                }
            },
            indent=2,
        )
        + "\n"
    )


class GeminiCli:
    name = "gemini_cli"
    display_name = "Gemini CLI"
    executable = "gemini"
    npm_package = "@google/gemini-cli"
    npm_version = "0.61.0"
    login_modes: tuple[LoginMode, ...] = (LoginMode.PASTE_CODE, LoginMode.API_KEY)
    credential_files: tuple[CredentialFile, ...] = (
        CredentialFile(".gemini/oauth_creds.json"),
        CredentialFile(".gemini/google_accounts.json"),
    )
    scrub_env: tuple[str, ...] = ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI")
    api_key_env = "GEMINI_API_KEY"

    def seed_files(self, mode: LoginMode) -> tuple[SeedFile, ...]:
        selected = "gemini-api-key" if mode is LoginMode.API_KEY else "oauth-personal"
        return (SeedFile(".gemini/settings.json", _settings(selected)),)

    def login_command(self, mode: LoginMode) -> LoginCommand:
        if mode is not LoginMode.PASTE_CODE:
            raise UnsupportedLoginMode(f"Gemini CLI has no {mode.value} login command")
        return LoginCommand(
            mode=mode,
            argv=("gemini",),
            env={"NO_BROWSER": "true"},
            needs_tty=True,
            # The CLI itself gives up on the code after 5 minutes.
            deadline_seconds=300.0,
            instructions=(
                "Open the link, sign in with Google and paste the authorization code the "
                "page shows. " + POLICY_NOTE
            ),
        )

    def read_login(self, screen: str, links: Sequence[str] = ()) -> LoginView:
        urls = urls_after(screen, URL_MARKER)
        url = urls[-1] if urls else None
        reason = last_line_with(screen, CODE_FAILED)
        return LoginView(
            url=url,
            state=query_param(url, "state") if url else None,
            code_prompts=screen.count(CODE_PROMPT),
            # The exchange's own reason is the useful part ("...reason: invalid_grant").
            rejection=reason,
            failure=reason or last_line_with(screen, FATAL),
            succeeded=SUCCEEDED in screen,
        )

    def format_code(self, code: str, view: LoginView) -> str:
        code = code.strip()
        if not code or any(ch.isspace() for ch in code):
            raise InvalidCode("Paste the authorization code exactly as the page shows it.")
        return code

    def prompt_command(self, prompt: str, options: PromptOptions) -> PromptCommand:
        argv = ["gemini", "--output-format", "stream-json"]
        argv += ["--approval-mode", _APPROVAL[options.permission]]
        if options.model:
            argv += ["--model", options.model]
        # --prompt=VALUE keeps a prompt that starts with "-" from reading as a flag.
        argv += [*options.extra_args, f"--prompt={prompt}"]
        return PromptCommand(argv=tuple(argv))

    def stream_parser(self) -> StreamParser:
        return GeminiStreamParser()
