"""Fake Gemini CLI's settings, folder trust and Google credentials (``~/.gemini``).

Trust is read the way gemini-cli 0.61.0 reads it (``checkPathTrust``):
``GEMINI_CLI_TRUST_WORKSPACE=true|false``, ``security.folderTrust.enabled``
(default true) and ``~/.gemini/trustedFolders.json`` rules ``TRUST_FOLDER`` /
``TRUST_PARENT`` / ``DO_NOT_TRUST``; ``--skip-trust`` skips it. Stdlib only.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from remotecli.testbed.clients import GEMINI_CLIENT_ID, GEMINI_SCOPES
from remotecli.testbed.fake_clis.common import (
    TransportError,
    home,
    http,
    now_ms,
    read_json,
    write_private,
)
from remotecli.testbed.tokens import pkce_challenge, pkce_verifier, random_token

VERSION = "0.61.0"
EXIT_AUTH = 41
EXIT_UNTRUSTED = 55
NON_INTERACTIVE = (
    "Manual authorization is required but the current session is non-interactive. Please run "
    "the Gemini CLI in an interactive terminal to log in, provide a GEMINI_API_KEY, or ensure "
    "Application Default Credentials are configured."
)
UNTRUSTED = (
    "Gemini CLI is not running in a trusted directory. To proceed, either use `--skip-trust`, "
    "set the `GEMINI_CLI_TRUST_WORKSPACE=true` environment variable, or trust this directory "
    "in interactive mode. For more details, see "
    "https://geminicli.com/docs/cli/trusted-folders/#headless-and-automated-environments"
)


class GeminiAuthError(Exception):
    """Authentication failed; ``str()`` is the message gemini prints (exit 41)."""


def gemini_dir() -> Path:
    return home() / ".gemini"


def settings() -> dict[str, Any]:
    return read_json(gemini_dir() / "settings.json") or {}


def selected_auth_type() -> str | None:
    data = settings()
    security = data.get("security") or {}
    auth = security.get("auth") or {}
    value = auth.get("selectedType") or data.get("selectedAuthType")
    return str(value) if value else None


def no_auth_message() -> str:
    return (
        f"Please set an Auth method in your {gemini_dir() / 'settings.json'} or specify one of "
        "the following environment variables before running: GEMINI_API_KEY, "
        "GOOGLE_GENAI_USE_VERTEXAI, GOOGLE_GENAI_USE_GCA"
    )


def is_trusted(path: Path) -> bool | None:
    """``True``/``False`` when a rule decides, ``None`` when nothing says (the dialog asks)."""
    env = os.environ.get("GEMINI_CLI_TRUST_WORKSPACE")
    if os.environ.get("GEMINI_RESTRICTED_MODE") == "true" or env == "false":
        return False
    if env == "true":
        return True
    folder_trust = (settings().get("security") or {}).get("folderTrust") or {}
    if folder_trust.get("enabled", True) is False:
        return True
    rules = read_json(gemini_dir() / "trustedFolders.json") or {}
    here = path.resolve()
    best: tuple[int, bool] | None = None
    for raw, level in rules.items():
        rule = Path(raw).resolve()
        if level == "TRUST_PARENT":
            rule = rule.parent
        if here != rule and rule not in here.parents:
            continue
        if level == "DO_NOT_TRUST" and here != rule:
            continue
        depth = len(rule.parts)
        if best is None or depth > best[0]:
            best = (depth, level != "DO_NOT_TRUST")
    return None if best is None else best[1]


def trust(path: Path, level: str) -> None:
    target = gemini_dir() / "trustedFolders.json"
    rules = read_json(target) or {}
    rules[str(path.resolve())] = level
    write_private(target, rules)


def creds_path() -> Path:
    return gemini_dir() / "oauth_creds.json"


def redirect_uri(server: str) -> str:
    return f"{server}/gemini/authcode"


class UserCodeLogin:
    """One attempt of gemini's NO_BROWSER flow: a fresh URL, state and verifier each time."""

    def __init__(self, server: str) -> None:
        self.server = server
        self.verifier = pkce_verifier() + random_token(64)  # google-auth-library: 128 chars
        self.state = secrets.token_hex(32)
        self.url = f"{server}/gemini/oauth/authorize?" + urlencode(
            [
                ("redirect_uri", redirect_uri(server)),
                ("access_type", "offline"),
                ("scope", " ".join(GEMINI_SCOPES)),
                ("code_challenge_method", "S256"),
                ("code_challenge", pkce_challenge(self.verifier)),
                ("state", self.state),
                ("response_type", "code"),
                ("client_id", GEMINI_CLIENT_ID),
            ]
        ).replace("+", "%20")

    def exchange(self, code: str) -> None:
        """Exchange and save the credentials; raise GeminiAuthError with gaxios's message."""
        form = {
            "code": code,
            "client_id": GEMINI_CLIENT_ID,
            "redirect_uri": redirect_uri(self.server),
            "grant_type": "authorization_code",
            "code_verifier": self.verifier,
        }
        try:
            resp = http("POST", f"{self.server}/gemini/oauth/token", form=form)
        except TransportError as exc:
            raise GeminiAuthError(f"request to {self.server}/gemini/oauth/token failed") from exc
        body = resp.body if isinstance(resp.body, dict) else {}
        if resp.status != 200:
            raise GeminiAuthError(str(body.get("error") or f"{resp.status} {resp.reason}"))
        save_creds(self.server, body)


def save_creds(server: str, token: dict[str, Any]) -> None:
    creds = {
        "access_token": token["access_token"],
        "refresh_token": token.get("refresh_token"),
        "scope": token.get("scope", " ".join(GEMINI_SCOPES)),
        "token_type": token.get("token_type", "Bearer"),
        "id_token": token.get("id_token"),
        "expiry_date": now_ms() + int(token.get("expires_in", 3599)) * 1000,
    }
    write_private(creds_path(), creds)
    try:
        info = http("GET", f"{server}/gemini/userinfo", bearer=str(token["access_token"]))
        email = info.body.get("email") if isinstance(info.body, dict) else None
    except TransportError:
        email = None
    if email:
        accounts = read_json(gemini_dir() / "google_accounts.json") or {"active": None, "old": []}
        old = [a for a in accounts.get("old", []) if a != email]
        if accounts.get("active") and accounts["active"] != email:
            old.append(accounts["active"])
        write_private(gemini_dir() / "google_accounts.json", {"active": email, "old": old})


def ensure_access(server: str) -> str:
    """A valid access token from oauth_creds.json, refreshed (same refresh token) if expired."""
    creds = read_json(creds_path())
    if not creds or (not creds.get("refresh_token") and not creds.get("access_token")):
        raise LookupError(NON_INTERACTIVE)
    access = str(creds.get("access_token") or "")
    try:
        if access and int(creds.get("expiry_date", 0)) > now_ms() + 10_000:
            info = http("GET", f"{server}/gemini/userinfo", bearer=access)
            if info.status == 200:
                return access
        resp = http(
            "POST",
            f"{server}/gemini/oauth/token",
            form={
                "refresh_token": str(creds.get("refresh_token") or ""),
                "client_id": GEMINI_CLIENT_ID,
                "grant_type": "refresh_token",
            },
        )
    except TransportError as exc:
        raise GeminiAuthError(str(exc)) from exc
    body = resp.body if isinstance(resp.body, dict) else {}
    if resp.status != 200:
        raise GeminiAuthError(str(body.get("error") or f"{resp.status} {resp.reason}"))
    creds.update(
        {
            "access_token": body["access_token"],
            "refresh_token": body.get("refresh_token") or creds.get("refresh_token"),
            "expiry_date": now_ms() + int(body.get("expires_in", 3599)) * 1000,
            "id_token": body.get("id_token", creds.get("id_token")),
        }
    )
    write_private(creds_path(), creds)
    return str(body["access_token"])
