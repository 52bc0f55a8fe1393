"""Fake ``claude`` (Claude Code 2.1.332): ``--version``, ``auth login|status|logout``, ``-p``.

Phrases, streams and exit codes are the real CLI's (measured in a PTY and with
pipes; see tests/fixtures/real_cli/claude_*). The sign-in URL points at the
test bed's ``/claude`` prefix; the short link uses the real CLI's encoding
(scope bits + PKCE challenge, no state). Credentials go where the real one
keeps them: ``$CLAUDE_CONFIG_DIR`` or ``~/.claude``/.credentials.json, and
``~/.claude.json``. Stdlib only.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from remotecli.testbed.clients import (
    CLAUDE_CLIENT_ID,
    CLAUDE_LOGIN_SCOPES,
    encode_claude_short_link,
)
from remotecli.testbed.fake_clis.claude_stream import (
    INVALID_API_KEY,
    NOT_LOGGED_IN,
    REFRESH_FAILED,
    VERSION,
    ClaudeRun,
)
from remotecli.testbed.fake_clis.common import (
    Script,
    TransportError,
    api_key_ok,
    err,
    home,
    http,
    now_ms,
    out,
    read_json,
    run,
    server_url,
    write_private,
)
from remotecli.testbed.tokens import pkce_challenge, pkce_verifier, random_token

PROMPT = "Paste code here if prompted > "
NO_HASH = "That doesn't look like the full code. Copy all of it, including the # in the middle."
PASTE_CLOSED = "Input ended before a code was pasted. Sign in again and paste the code shown."
HELP = """Usage: claude [options] [command] [prompt]

Claude Code - starts an interactive session by default, use -p/--print for
non-interactive output

Arguments:
  prompt                                            Your prompt

Options:
  -p, --print                                       Print response and exit (useful for pipes)
  --output-format <format>                          Output format (only works with --print):
                                                    "text" (default), "json", or "stream-json"
  --verbose                                         Override verbose mode setting from config
  --model <model>                                   Model for the current session
  --permission-mode <mode>                          Permission mode to use for the session
  --dangerously-skip-permissions                    Bypass all permission checks
  -v, --version                                     Output the version number
  -h, --help                                        Display help for command

Commands:
  auth                                              Manage authentication

(remote-cli test bed: a FAKE claude that talks to $REMOTECLI_TESTBED_URL)
"""
AUTH_HELP = """Usage: claude auth [options] [command]

Manage authentication

Options:
  -h, --help        Display help for command

Commands:
  help [command]    display help for command
  login [options]   Sign in to your Anthropic account
  logout [options]  Log out from your Anthropic account
  status [options]  Show authentication status
"""
_VALUE_OPTS = {
    "--output-format",
    "--model",
    "--permission-mode",
    "--allowedTools",
    "--allowed-tools",
    "--disallowedTools",
    "--append-system-prompt",
    "--max-turns",
    "--session-id",
    "--resume",
    "--input-format",
    "--email",
}
_FLAG_OPTS = {
    "-v",
    "--version",
    "-h",
    "--help",
    "-p",
    "--print",
    "--verbose",
    "--dangerously-skip-permissions",
    "--include-partial-messages",
    "--json",
    "--text",
    "--claudeai",
    "--console",
    "--sso",
    "-c",
    "--continue",
}


class UsageError(Exception):
    pass


def _parse(argv: list[str]) -> tuple[dict[str, str | bool], list[str]]:
    opts: dict[str, str | bool] = {}
    positional: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, value = arg.partition("=")
        if arg == "--":
            positional.extend(argv[i + 1 :])
            break
        if name in _VALUE_OPTS:
            if not eq:
                i += 1
                if i >= len(argv):
                    raise UsageError(f"error: option '{name} <value>' argument missing")
                value = argv[i]
            opts[name] = value
        elif arg in _FLAG_OPTS:
            opts[arg] = True
        elif arg.startswith("-") and arg != "-":
            raise UsageError(f"error: unknown option '{arg}'")
        else:
            positional.append(arg)
        i += 1
    return opts, positional


def config_dir() -> Path:
    return Path(os.environ.get("CLAUDE_CONFIG_DIR") or home() / ".claude")


def credentials_path() -> Path:
    return config_dir() / ".credentials.json"


def _global_config_path() -> Path:
    return home() / ".claude.json"


def paste_problem(text: str) -> str | None:
    """The real CLI's checks of a pasted code (``vMe`` in claude 2.1.332)."""
    t = text.strip()
    if re.search(r"https?://(localhost|127\.0\.0\.1|\[::1\])[:/]", t, re.IGNORECASE):
        return (
            "That address only works in a browser on this machine. Open the sign-in address "
            "shown above instead, and paste the code its last page shows."
        )
    if re.search(r"https?://|/magic-link#", t, re.IGNORECASE):
        return (
            "That's a web address, not the code. If it's a sign-in link, open it in your "
            "browser. If the last page shows a code, paste it here."
        )
    if re.fullmatch(r"\d{4,10}", re.sub(r"[\s-]", "", t)):
        return (
            "That looks like a verification code. Enter it in your browser, on the page that "
            "asks for it. If a page then shows a longer code, paste it here."
        )
    parts = t.split("#")
    if len(parts) < 2 or not parts[0] or not parts[1]:
        return NO_HASH
    return None


def _save_login(server: str, token: dict[str, Any]) -> None:
    scopes = str(token.get("scope", "")).split()
    write_private(
        credentials_path(),
        {
            "claudeAiOauth": {
                "accessToken": token["access_token"],
                "refreshToken": token["refresh_token"],
                "expiresAt": now_ms() + int(token.get("expires_in", 3600)) * 1000,
                "scopes": scopes,
                "subscriptionType": "max",
                "rateLimitTier": "default_claude_max_20x",
            }
        },
    )
    account = token.get("account") or {}
    org = token.get("organization") or {}
    config = read_json(_global_config_path()) or {}
    config.update(
        {
            "hasCompletedOnboarding": True,
            "oauthAccount": {
                "accountUuid": account.get("uuid"),
                "emailAddress": account.get("email_address"),
                "organizationUuid": org.get("uuid"),
                "organizationName": org.get("name"),
            },
        }
    )
    write_private(_global_config_path(), config)


def _token_url(server: str) -> str:
    return f"{server}/claude/v1/oauth/token"


def login(server: str) -> int:
    tty = sys.stdin.isatty() and sys.stdout.isatty()
    verifier = pkce_verifier()
    challenge = pkce_challenge(verifier)
    state = random_token(32)
    redirect_uri = f"{server}/claude/oauth/code/callback"
    scopes = list(CLAUDE_LOGIN_SCOPES)
    full = f"{server}/claude/oauth/authorize?" + urlencode(
        [
            ("code", "true"),
            ("client_id", CLAUDE_CLIENT_ID),
            ("response_type", "code"),
            ("redirect_uri", redirect_uri),
            ("scope", " ".join(scopes)),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256"),
            ("state", state),
        ]
    )
    short = f"{server}/claude/oauth/authorize?" + encode_claude_short_link(0, scopes, challenge)
    url = full if os.environ.get("CLAUDE_CODE_FULL_SIGN_IN_LINK") else short
    out("Opening browser to sign in\u2026\n")
    shown = f"\x1b]8;;{url}\x07\x1b[94m{url}\x1b[39m\x1b]8;;\x07" if tty else url
    out(f"If the browser didn't open, visit:\n{shown}\n")
    out(PROMPT)
    while True:
        line = sys.stdin.readline()
        if not line:
            if not tty:
                # The real CLI keeps waiting for its (unprinted) loopback
                # listener when stdin closes without a TTY: so does the fake.
                while True:
                    time.sleep(3600)
            out("\n")
            err(f"Couldn't log in: {PASTE_CLOSED}\n")
            out("\x1b[?25h")
            return 130
        problem = paste_problem(line)
        if problem is None:
            break
        if line.strip() or not tty:
            err(problem + "\n")
        if tty:
            out(PROMPT)
    code, pasted_state = line.strip().split("#")[:2]
    if tty:
        out("Signing in\u2026\n")
    body = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "client_id": CLAUDE_CLIENT_ID,
        "code_verifier": verifier,
        "state": pasted_state,
    }
    try:
        resp = http("POST", _token_url(server), json_body=body)
    except TransportError as exc:
        return _login_failed(str(exc), tty)
    if resp.status != 200 or not isinstance(resp.body, dict):
        if resp.status == 401:
            return _login_failed("Authentication failed: Invalid authorization code", tty)
        return _login_failed(f"Token exchange failed ({resp.status}): {resp.reason}", tty)
    _save_login(server, resp.body)
    out("Login successful.\n")
    if tty:
        out("\x1b[?25h")
    return 0


def _login_failed(message: str, tty: bool) -> int:
    err(f"Couldn't log in: {message}\n")
    if tty:
        out("\x1b[?25h")
    return 1


def status(as_text: bool) -> int:
    creds = (read_json(credentials_path()) or {}).get("claudeAiOauth") or {}
    account = (read_json(_global_config_path()) or {}).get("oauthAccount") or {}
    api_key = os.environ.get("ANTHROPIC_API_KEY", "")
    logged_in = bool(creds.get("accessToken")) or bool(api_key)
    if as_text:
        if not logged_in:
            out("Not logged in. Run claude auth login to authenticate.\n")
        elif creds.get("accessToken"):
            out(f"Login method: Claude Max account\nEmail: {account.get('emailAddress')}\n")
        else:
            out("API key: ANTHROPIC_API_KEY\n")
        return 0 if logged_in else 1
    report: dict[str, Any] = {
        "loggedIn": logged_in,
        "authMethod": "claude.ai" if creds.get("accessToken") else "api_key" if api_key else "none",
        "apiProvider": "firstParty",
        "analyticsDisabled": False,
        "projectsDirectory": str(config_dir() / "projects"),
        "configDirectory": str(config_dir()),
        "loginExpiresAt": None,
    }
    if not logged_in:
        report["consoleProfileSignInOffered"] = True
    if api_key:
        report["apiKeySource"] = "ANTHROPIC_API_KEY"
    if creds.get("accessToken"):
        report.update(
            {
                "email": account.get("emailAddress"),
                "orgId": account.get("organizationUuid"),
                "orgName": account.get("organizationName"),
                "subscriptionType": creds.get("subscriptionType"),
                "storedClaudeAiLogin": True,
            }
        )
    out(json.dumps(report, indent=2) + "\n")
    return 0 if logged_in else 1


def logout() -> int:
    path = credentials_path()
    existed = path.exists()
    path.unlink(missing_ok=True)
    if existed:
        out("Successfully logged out from your Anthropic account.\n")
    else:
        out("Not logged in.\n")
    return 0


def ensure_access(server: str) -> str:
    """A valid access token, refreshed (and rotated on disk) when expired; raises LookupError."""
    path = credentials_path()
    data = read_json(path) or {}
    creds = data.get("claudeAiOauth") or {}
    access = creds.get("accessToken")
    if not access:
        raise LookupError(NOT_LOGGED_IN)
    try:
        if int(creds.get("expiresAt", 0)) > now_ms() + 60_000:
            info = http("GET", f"{server}/claude/userinfo", bearer=access)
            if info.status == 200:
                return str(access)
        resp = http(
            "POST",
            _token_url(server),
            json_body={
                "grant_type": "refresh_token",
                "refresh_token": creds.get("refreshToken", ""),
                "client_id": CLAUDE_CLIENT_ID,
                "scope": " ".join(creds.get("scopes") or []),
            },
        )
    except TransportError as exc:
        raise LookupError(f"API Error: Connection error. ({exc})") from exc
    if resp.status != 200 or not isinstance(resp.body, dict):
        raise PermissionError(REFRESH_FAILED)
    creds.update(
        {
            "accessToken": resp.body["access_token"],
            "refreshToken": resp.body.get("refresh_token", creds.get("refreshToken")),
            "expiresAt": now_ms() + int(resp.body.get("expires_in", 3600)) * 1000,
        }
    )
    data["claudeAiOauth"] = creds
    write_private(path, data)
    return str(resp.body["access_token"])


def prompt_run(server: str, opts: dict[str, str | bool], positional: list[str]) -> int:
    fmt = str(opts.get("--output-format", "text"))
    if fmt not in ("text", "json", "stream-json"):
        err(
            f"error: option '--output-format <format>' argument '{fmt}' is invalid. "
            "Allowed choices are text, json, stream-json.\n"
        )
        return 1
    if fmt == "stream-json" and not opts.get("--verbose"):
        err("Error: When using --print, --output-format=stream-json requires --verbose\n")
        return 1
    prompt = " ".join(positional)
    if not prompt and not sys.stdin.isatty():
        prompt = sys.stdin.read().strip()
    if not prompt:
        err(
            "Error: Input must be provided either through stdin or as a prompt argument "
            "when using --print\n"
        )
        return 1
    api_key = os.environ.get("ANTHROPIC_API_KEY", "")
    model = opts.get("--model")
    claude_run = ClaudeRun(
        fmt, str(model) if model else None, "ANTHROPIC_API_KEY" if api_key else "none"
    )
    mode = "bypassPermissions" if opts.get("--dangerously-skip-permissions") else "default"
    claude_run.init(str(opts.get("--permission-mode", mode)))
    if api_key:
        if not api_key_ok(api_key):
            return claude_run.fail("authentication_failed", INVALID_API_KEY)
    else:
        try:
            ensure_access(server)
        except PermissionError as exc:
            return claude_run.fail("authentication_failed", str(exc))
        except LookupError as exc:
            return claude_run.fail("authentication_failed", str(exc))
    return claude_run.answer(Script(prompt))


def cli(argv: list[str]) -> int:
    try:
        opts, positional = _parse(argv)
    except UsageError as exc:
        err(f"{exc}\n")
        return 1
    if "-v" in argv or "--version" in argv:
        out(f"{VERSION} (Claude Code)\n")
        return 0
    if positional[:1] == ["auth"]:
        sub = positional[1:2]
        if "-h" in argv or "--help" in argv or not sub or sub == ["help"]:
            out(AUTH_HELP)
            return 0
        server = server_url("claude")
        if sub == ["login"]:
            return login(server)
        if sub == ["status"]:
            return status(bool(opts.get("--text")))
        if sub == ["logout"]:
            return logout()
        err(f"error: unknown command '{sub[0]}'\n")
        return 1
    if "-h" in argv or "--help" in argv:
        out(HELP)
        return 0
    if opts.get("-p") or opts.get("--print"):
        return prompt_run(server_url("claude"), opts, positional)
    err("claude (remote-cli test bed): the interactive TUI is not faked; use -p or auth.\n")
    return 1


def main() -> None:
    run(cli)
