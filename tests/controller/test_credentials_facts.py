"""Expiry and usability read from each provider's credential files (pure functions)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest

from remotecli.controller.db.models import CredentialState
from remotecli.controller.vault.facts import (
    CODEX_REFRESH_INTERVAL,
    FileFacts,
    claude_facts,
    codex_facts,
    facts_for,
    gemini_facts,
    jwt_claims,
)

WHEN = datetime(2026, 11, 29, 18, 0, tzinfo=UTC)
WHEN_MS = int(WHEN.timestamp() * 1000)


def _jwt(payload: dict[str, object]) -> str:
    def part(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'HS256'})}.{part(payload)}.c2lnbmF0dXJl"


def _files(path: str, content: object) -> dict[str, bytes]:
    return {path: json.dumps(content).encode()}


def test_claude_expiry_is_expires_at_in_milliseconds() -> None:
    files = _files(
        ".claude/.credentials.json",
        {
            "claudeAiOauth": {
                "accessToken": "a",
                "refreshToken": "r",
                "expiresAt": WHEN_MS,
                "scopes": [],
            }
        },
    )

    assert claude_facts(files) == FileFacts(usable=True, expires_at=WHEN)


def test_codex_expiry_is_the_id_tokens_exp() -> None:
    files = _files(
        ".codex/auth.json",
        {
            "auth_mode": "chatgpt",
            "OPENAI_API_KEY": None,
            "last_refresh": "2026-11-01T00:00:00Z",
            "tokens": {
                "id_token": _jwt({"exp": int(WHEN.timestamp())}),
                "access_token": "a",
                "refresh_token": "r",
                "account_id": "acc",
            },
        },
    )

    assert codex_facts(files) == FileFacts(usable=True, expires_at=WHEN)


def test_codex_without_an_id_token_expires_when_codex_would_refresh() -> None:
    files = _files(
        ".codex/auth.json",
        {
            "tokens": {"access_token": "a", "refresh_token": "r"},
            "last_refresh": "2026-11-29T18:00:00.123Z",
        },
    )

    facts = codex_facts(files)

    assert facts.usable
    assert facts.expires_at == WHEN + timedelta(milliseconds=123) + CODEX_REFRESH_INTERVAL


def test_a_codex_api_key_login_does_not_expire() -> None:
    files = _files(
        ".codex/auth.json",
        {"auth_mode": "apikey", "OPENAI_API_KEY": "sk-x", "tokens": None, "last_refresh": None},
    )

    assert codex_facts(files) == FileFacts(usable=True, expires_at=None)


def test_gemini_expiry_is_expiry_date_in_milliseconds() -> None:
    files = _files(
        ".gemini/oauth_creds.json",
        {"access_token": "a", "refresh_token": "r", "expiry_date": WHEN_MS},
    )

    assert gemini_facts(files) == FileFacts(usable=True, expires_at=WHEN)


@pytest.mark.parametrize(
    ("provider", "files"),
    [
        ("claude_code", {}),
        ("claude_code", {".claude/.credentials.json": b"not json"}),
        ("claude_code", _files(".claude/.credentials.json", {"claudeAiOauth": {}})),
        ("codex", _files(".codex/auth.json", {"tokens": None})),
        ("codex", _files(".codex/auth.json", ["a list"])),
        ("gemini_cli", _files(".gemini/oauth_creds.json", {"expiry_date": WHEN_MS})),
    ],
)
def test_files_without_a_token_need_a_login(provider: str, files: dict[str, bytes]) -> None:
    assert facts_for(provider, files).state(WHEN) is CredentialState.NEEDS_LOGIN


@pytest.mark.parametrize(
    "expires",
    [None, "soon", True, 10**30, {"ms": 1}],
)
def test_a_missing_or_odd_expiry_is_unknown_not_an_error(expires: object) -> None:
    files = _files(
        ".claude/.credentials.json", {"claudeAiOauth": {"accessToken": "a", "expiresAt": expires}}
    )

    assert claude_facts(files) == FileFacts(usable=True, expires_at=None)


def test_state_is_expired_once_the_expiry_passed() -> None:
    facts = FileFacts(usable=True, expires_at=WHEN)

    assert facts.state(WHEN - timedelta(seconds=1)) is CredentialState.CONNECTED
    assert facts.state(WHEN) is CredentialState.EXPIRED
    assert FileFacts(usable=True).state(WHEN) is CredentialState.CONNECTED


@pytest.mark.parametrize(
    "token", [None, 42, "abc", "a.b", "a.!!!.c", "a.bm90IGpzb24.c", "a.WzFd.c"]
)
def test_jwt_claims_of_something_that_is_not_a_jwt_are_empty(token: object) -> None:
    assert jwt_claims(token) == {}


def test_jwt_claims_are_read_without_verifying() -> None:
    assert jwt_claims(_jwt({"exp": 1, "sub": "x"})) == {"exp": 1, "sub": "x"}
