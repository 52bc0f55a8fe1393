"""Fake ``gemini`` (Gemini CLI 0.61.0): ``--version``, interactive NO_BROWSER login, ``-p``.

Interactive (a TTY, no ``-p``): with ``security.auth.selectedType =
"oauth-personal"`` and no usable credentials it enters the alternate screen
and runs Google's user-code flow exactly as the real one prints it (a new URL
and state per attempt, two attempts, then exit 41). After login it asks the
folder-trust question when no rule decides (the real one asks it inside its
TUI), then shows a minimal prompt loop: ``/quit`` or end of input exits 0.
Without a TTY it behaves as the real one: headless, exit 41 when it would
need to ask. It ignores SIGTERM, like the real one. Stdlib only.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from remotecli.testbed.fake_clis import gemini_auth
from remotecli.testbed.fake_clis.common import err, out, read_json, run, server_url
from remotecli.testbed.fake_clis.gemini_auth import (
    EXIT_AUTH,
    NON_INTERACTIVE,
    VERSION,
    GeminiAuthError,
    UserCodeLogin,
)
from remotecli.testbed.fake_clis.gemini_run import fatal, headless

USAGE = """Usage: gemini [options] [command]

Gemini CLI - Launch an interactive CLI, use -p/--prompt for non-interactive mode

Options:
  -m, --model                     Model  [string]
  -p, --prompt                    Run in non-interactive (headless) mode with the given prompt.  [string]
  -y, --yolo                      Automatically accept all actions  [boolean] [default: false]
      --approval-mode             Set the approval mode  [string]
      --skip-trust                Trust the current workspace for this session.  [boolean]
  -o, --output-format             The format of the CLI output.  [string] [choices: "text", "json", "stream-json"]
  -v, --version                   Show version number  [boolean]
  -h, --help                      Show help  [boolean]

(remote-cli test bed: a FAKE gemini that talks to $REMOTECLI_TESTBED_URL)
"""  # noqa: E501 - yargs' own column layout
_VALUE = {"-m", "--model", "-p", "--prompt", "--approval-mode", "-o", "--output-format"}
_FLAGS = {"-y", "--yolo", "--skip-trust", "-d", "--debug", "-v", "--version", "-h", "--help"}
_ALT_ON = "\x1b[?1049h\x1b[2J\x1b[H\x1b[?1006l\x1b[?1002l\x1b[<u\x1b[?7h"
_ALT_OFF = "\x1b[?1049l"
_MAX_ATTEMPTS = 2


def _parse(argv: list[str]) -> dict[str, str | bool] | str:
    """Options, or the unknown argument's name."""
    opts: dict[str, str | bool] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, value = arg.partition("=")
        if name in _VALUE:
            if not eq:
                i += 1
                value = argv[i] if i < len(argv) else ""
            opts[name.lstrip("-")[:1] if name in ("-p", "--prompt") else name] = value
        elif arg in _FLAGS:
            opts[arg] = True
        else:
            return arg.lstrip("-")
        i += 1
    return opts


def user_code_login(server: str) -> bool:
    """Google's NO_BROWSER flow in the alternate screen; True once credentials are saved."""
    out(_ALT_ON)
    success = False
    try:
        for attempt in range(_MAX_ATTEMPTS):
            login = UserCodeLogin(server)
            out(f"Please visit the following URL to authorize the application:\n\n{login.url}\n\n")
            out("\x1b[1G\x1b[0JEnter the authorization code: ")
            code = sys.stdin.readline().strip()
            if not code:
                err("Authorization code is required.\n")
            else:
                try:
                    login.exchange(code)
                    success = True
                except GeminiAuthError as exc:
                    err(f"Failed to authenticate with authorization code:{exc}\n")
            if success:
                break
            last = attempt == _MAX_ATTEMPTS - 1
            err("\nFailed to authenticate with user code." + ("" if last else " Retrying...\n"))
    finally:
        out(_ALT_OFF)
    return success


def trust_dialog(cwd: Path) -> bool:
    """The folder-trust question; False when the user escapes (gemini then exits)."""
    out(
        "\n\x1b[1mDo you trust the files in this folder?\x1b[0m\n\n"
        "Trusting a folder allows Gemini CLI to load its local configurations, including "
        "custom commands, hooks, MCP servers, agent skills, and settings. These "
        "configurations could execute code on your behalf or change the behavior of the CLI.\n\n"
        f"\u25cf 1. Trust folder ({cwd.name})\n"
        f"  2. Trust parent folder ({cwd.parent.name})\n"
        "  3. Don't trust\n"
    )
    answer = sys.stdin.readline()
    choice = answer.strip()
    if not answer or choice.startswith("\x1b"):
        out(
            "A folder trust level must be selected to continue. Exiting since escape was pressed.\n"
        )
        return False
    if choice == "2":
        gemini_auth.trust(cwd.parent, "TRUST_PARENT")
    elif choice == "3":
        gemini_auth.trust(cwd, "DO_NOT_TRUST")
    else:
        gemini_auth.trust(cwd, "TRUST_FOLDER")
    return True


def interactive(server: str, skip_trust: bool) -> int:
    api_key = os.environ.get("GEMINI_API_KEY", "")
    if not api_key:
        if gemini_auth.selected_auth_type() is None:
            err(gemini_auth.no_auth_message() + "\n")
            return EXIT_AUTH
        try:
            gemini_auth.ensure_access(server)
        except (LookupError, GeminiAuthError):
            if not user_code_login(server):
                err("Failed to authenticate with user code.\n")
                return fatal("Failed to authenticate with user code.", EXIT_AUTH)
    cwd = Path.cwd()
    if not skip_trust and gemini_auth.is_trusted(cwd) is None and not trust_dialog(cwd):
        return 1
    accounts = read_json(gemini_auth.gemini_dir() / "google_accounts.json") or {}
    who = f"Logged in with Google: {accounts.get('active')}" if not api_key else "Gemini API key"
    out(f"\n  Gemini CLI v{VERSION} (remote-cli test bed)\n  {who}\n\n> ")
    while True:
        line = sys.stdin.readline()
        if not line or line.strip() in ("/quit", "/exit"):
            out("\nAgent powering down. Goodbye!\n")
            return 0
        if line.strip():
            out(f"\u2726 You said: {line.strip()}\n")
        out("> ")


def cli(argv: list[str]) -> int:
    # The real gemini ignores SIGTERM (measured): the platform must use SIGKILL.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    parsed = _parse(argv)
    if isinstance(parsed, str):
        err(f"{USAGE}\nUnknown argument: {parsed}\n")
        return 1
    opts = parsed
    if opts.get("-v") or opts.get("--version"):
        out(f"{VERSION}\n")
        return 0
    if opts.get("-h") or opts.get("--help"):
        out(USAGE)
        return 0
    server = server_url("gemini")
    fmt = str(opts.get("-o") or opts.get("--output-format") or "text")
    skip_trust = bool(opts.get("--skip-trust"))
    prompt = opts.get("p")
    if isinstance(prompt, str) or not sys.stdin.isatty():
        if not isinstance(prompt, str):
            prompt = sys.stdin.read().strip()
        return headless(server, prompt, fmt, skip_trust, str(opts.get("-m") or "auto"))
    return interactive(server, skip_trust)


def main() -> None:
    run(cli)


__all__ = ["NON_INTERACTIVE", "cli", "fatal", "main"]
