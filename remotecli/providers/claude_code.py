"""Claude Code (``claude``): paste-code login, ``~/.claude`` credentials, stream-json runs.

Facts (shared/research/providers.md, checked against the pinned package):
``claude auth login`` prints "If the browser didn't open, visit:" and the URL
(inside an OSC 8 hyperlink), then "Paste code here if prompted > ". The
provider's page shows ``<code>#<state>``. The CLI does not check the state
locally, so we do: ``CLAUDE_CODE_FULL_SIGN_IN_LINK=1`` makes it print the full
authorize URL, whose ``state`` the pasted value must carry.
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
from remotecli.providers.stream.claude_code import ClaudeStreamParser

URL_MARKER = "If the browser didn't open, visit:"
CODE_PROMPT = "Paste code here if prompted"
REJECTED = "That doesn't look like the full code"
FAILED = "Couldn't log in"
SUCCEEDED = "Login successful"

_PERMISSION_ARGS = {
    "read-only": ("--permission-mode", "plan"),
    "workspace-write": ("--permission-mode", "acceptEdits"),
    "full-access": ("--dangerously-skip-permissions",),
}


class ClaudeCode:
    name = "claude_code"
    display_name = "Claude Code"
    executable = "claude"
    npm_package = "@anthropic-ai/claude-code"
    npm_version = "2.1.332"
    login_modes: tuple[LoginMode, ...] = (LoginMode.PASTE_CODE, LoginMode.API_KEY)
    credential_files: tuple[CredentialFile, ...] = (CredentialFile(".claude/.credentials.json"),)
    scrub_env: tuple[str, ...] = (
        "CLAUDE_CODE_OAUTH_TOKEN",
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_AUTH_TOKEN",
    )
    api_key_env = "ANTHROPIC_API_KEY"

    def seed_files(self, mode: LoginMode) -> tuple[SeedFile, ...]:
        # Without the onboarding flag a second machine starts the first-run
        # wizard instead of using the copied credentials.
        return (SeedFile(".claude.json", json.dumps({"hasCompletedOnboarding": True}) + "\n"),)

    def login_command(self, mode: LoginMode) -> LoginCommand:
        if mode is not LoginMode.PASTE_CODE:
            raise UnsupportedLoginMode(f"Claude Code has no {mode.value} login command")
        return LoginCommand(
            mode=mode,
            argv=("claude", "auth", "login"),
            env={"CLAUDE_CODE_FULL_SIGN_IN_LINK": "1"},
            deadline_seconds=600.0,
            instructions=(
                "Open the link, sign in to Claude, then copy the whole code the page "
                "shows (it contains a # in the middle) and paste it here."
            ),
        )

    def read_login(self, screen: str, links: Sequence[str] = ()) -> LoginView:
        urls = urls_after(screen, URL_MARKER)
        # The OSC 8 target is the full URL even when the visible text is short
        # or wrapped; prefer it when it is an authorize URL.
        authorize = [link for link in links if "/oauth/authorize" in link]
        url = authorize[-1] if authorize else (urls[-1] if urls else None)
        return LoginView(
            url=url,
            state=query_param(url, "state") if url else None,
            code_prompts=screen.count(CODE_PROMPT),
            rejection=last_line_with(screen, REJECTED),
            failure=last_line_with(screen, FAILED),
            succeeded=SUCCEEDED in screen,
        )

    def format_code(self, code: str, view: LoginView) -> str:
        code = code.strip()
        head, sep, state = code.partition("#")
        if not sep or not head or not state:
            raise InvalidCode(
                "That doesn't look like the full code: copy all of it, including the # "
                "in the middle."
            )
        if view.state is not None and state != view.state:
            raise InvalidCode(
                "That code is not from this sign-in: open the newest link and paste the "
                "code it shows."
            )
        return code

    def prompt_command(self, prompt: str, options: PromptOptions) -> PromptCommand:
        argv = ["claude", "-p", "--output-format", "stream-json", "--verbose"]
        argv += _PERMISSION_ARGS[options.permission]
        if options.model:
            argv += ["--model", options.model]
        argv += [*options.extra_args, "--", prompt]
        return PromptCommand(argv=tuple(argv))

    def stream_parser(self) -> StreamParser:
        return ClaudeStreamParser()
