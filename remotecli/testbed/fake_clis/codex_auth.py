"""Fake Codex's credentials: ``$CODEX_HOME/auth.json`` and refreshing it like codex 0.171.0.

Stdlib only.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from remotecli.testbed.clients import CODEX_CLIENT_ID
from remotecli.testbed.fake_clis.common import (
    TransportError,
    api_key_ok,
    home,
    http,
    read_json,
    write_private,
)
from remotecli.testbed.tokens import jwt_payload

#: What codex prints for each refresh failure code (codex-rs login/src/auth/manager.rs).
REFRESH_MESSAGES: dict[str, str] = {
    "refresh_token_expired": (
        "Your access token could not be refreshed because your refresh token has expired. "
        "Please log out and sign in again."
    ),
    "refresh_token_reused": (
        "Your access token could not be refreshed because your refresh token was already "
        "used. Please log out and sign in again."
    ),
    "refresh_token_invalidated": (
        "Your access token could not be refreshed because your refresh token was revoked. "
        "Please log out and sign in again."
    ),
}
REFRESH_UNKNOWN = "Your access token could not be refreshed. Please log out and sign in again."
MISSING_AUTH = (
    "unexpected status 401 Unauthorized: Missing bearer or basic authentication in header"
)


class AuthFailed(Exception):
    """The run cannot authenticate; the message is what codex prints."""


def codex_home() -> Path:
    return Path(os.environ.get("CODEX_HOME") or home() / ".codex")


def auth_path() -> Path:
    return codex_home() / "auth.json"


def rfc3339_now() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"


def save_tokens(token: dict[str, Any]) -> None:
    id_token = str(token.get("id_token", ""))
    try:
        claims = jwt_payload(id_token).get("https://api.openai.com/auth", {})
    except ValueError:
        claims = {}
    write_private(
        auth_path(),
        {
            "auth_mode": "chatgpt",
            "OPENAI_API_KEY": None,
            "tokens": {
                "id_token": id_token,
                "access_token": token["access_token"],
                "refresh_token": token["refresh_token"],
                "account_id": claims.get("chatgpt_account_id"),
            },
            "last_refresh": rfc3339_now(),
        },
    )


def save_api_key(key: str) -> None:
    write_private(
        auth_path(),
        {"auth_mode": "apikey", "OPENAI_API_KEY": key, "tokens": None, "last_refresh": None},
    )


def _expired(access_token: str) -> bool:
    try:
        exp = jwt_payload(access_token).get("exp")
    except ValueError:
        return False
    return isinstance(exp, int | float) and exp <= time.time() + 30


def refresh(server: str, data: dict[str, Any]) -> str:
    """Refresh ``data``'s tokens at the server, rewrite auth.json, return the new access token."""
    tokens = data.get("tokens") or {}
    try:
        resp = http(
            "POST",
            f"{server}/codex/oauth/token",
            json_body={
                "client_id": CODEX_CLIENT_ID,
                "grant_type": "refresh_token",
                "refresh_token": tokens.get("refresh_token", ""),
                "scope": "openid profile email",
            },
        )
    except TransportError as exc:
        raise AuthFailed(f"Failed to refresh token: {exc}") from exc
    if resp.status == 401:
        body = resp.body if isinstance(resp.body, dict) else {}
        error = body.get("error")
        code = error.get("code") if isinstance(error, dict) else error
        if not isinstance(code, str):
            code = body.get("code")
        lowered = code.lower() if isinstance(code, str) else ""
        raise AuthFailed(REFRESH_MESSAGES.get(lowered, REFRESH_UNKNOWN))
    if resp.status != 200 or not isinstance(resp.body, dict):
        raise AuthFailed(f"Failed to refresh token: {resp.status} {resp.reason}: {resp.text}")
    new = resp.body
    tokens.update(
        {
            "id_token": new.get("id_token", tokens.get("id_token")),
            "access_token": new["access_token"],
            "refresh_token": new.get("refresh_token", tokens.get("refresh_token")),
        }
    )
    data["tokens"] = tokens
    data["last_refresh"] = rfc3339_now()
    write_private(auth_path(), data)
    return str(new["access_token"])


def ensure_access(server: str) -> str:
    """A working bearer for a run: an API key (env or auth.json) or a ChatGPT access token."""
    env_key = os.environ.get("CODEX_API_KEY") or os.environ.get("OPENAI_API_KEY")
    data = read_json(auth_path())
    if env_key:
        return _check_key(env_key)
    if data is None:
        raise AuthFailed(MISSING_AUTH)
    if data.get("OPENAI_API_KEY") and not data.get("tokens"):
        return _check_key(str(data["OPENAI_API_KEY"]))
    tokens = data.get("tokens") or {}
    access = str(tokens.get("access_token", ""))
    if not access:
        raise AuthFailed(MISSING_AUTH)
    if not _expired(access):
        try:
            info = http("GET", f"{server}/codex/userinfo", bearer=access)
        except TransportError as exc:
            raise AuthFailed(f"stream disconnected before completion: {exc}") from exc
        if info.status == 200:
            return access
    return refresh(server, data)


def _check_key(key: str) -> str:
    if api_key_ok(key):
        return key
    shown = key[:3] + "*" * max(0, len(key) - 7) + key[-4:] if len(key) > 7 else "***"
    raise AuthFailed(
        "unexpected status 401 Unauthorized: Incorrect API key provided: "
        f"{shown}. You can find your API key at https://platform.openai.com/account/api-keys."
    )
