"""Reading the login state out of what the REAL CLIs printed in a PTY.

The fixtures in tests/fixtures/real_cli/ are raw bytes captured from the
pinned npm packages (see NOTES.md there), at 80, 300 and 1000 columns.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from remotecli.providers import get_provider
from remotecli.providers.base import CallbackTarget, InvalidCode, LoginView
from remotecli.providers.terminal import Transcript

FIXTURES = Path(__file__).parent.parent / "fixtures" / "real_cli"


def _capture(name: str) -> tuple[bytes, int]:
    meta = json.loads((FIXTURES / f"{name}.json").read_text())
    return (FIXTURES / f"{name}.raw").read_bytes(), meta.get("columns") or 80


def _read(provider: str, raw: bytes, columns: int) -> LoginView:
    t = Transcript(columns=columns)
    t.feed(raw)
    return get_provider(provider).read_login(t.text, t.links)


@pytest.mark.parametrize("columns", [80, 300, 1000])
def test_claude_full_link_url_state_prompts_and_failure(columns: int) -> None:
    view = _read("claude_code", *_capture(f"claude_auth_login_full_link_pty_{columns}"))
    assert view.url is not None
    assert view.url.startswith("https://claude.com/cai/oauth/authorize?code=true&client_id=")
    assert view.url.endswith(f"&state={view.state}")
    assert view.state is not None and len(view.state) == 43
    # The capture pasted "nohashhere" (refused, asked again) then "abc#def" offline.
    assert view.code_prompts == 2
    assert view.rejection == (
        "That doesn't look like the full code. Copy all of it, including the # in the middle."
    )
    assert view.failure == "Couldn't log in: getaddrinfo ENOTFOUND platform.claude.com"
    assert not view.succeeded


def test_claude_short_link_comes_from_the_osc8_target() -> None:
    view = _read("claude_code", *_capture("claude_auth_login_pty_80"))
    assert view.url is not None and view.url.startswith("https://claude.ai/oauth/authorize?")
    assert view.state is None  # the short link hides it: we run with the full link


@pytest.mark.parametrize("columns", [80, 300, 1000])
def test_codex_url_and_its_callback_listener(columns: int) -> None:
    view = _read("codex", *_capture(f"codex_login_pty_{columns}"))
    assert view.url is not None
    assert view.url.startswith("https://auth.openai.com/oauth/authorize?response_type=code&")
    assert view.state is not None
    # The real redirect_uri is http://127.0.0.1:1455/auth/callback (not localhost).
    assert view.callback == CallbackTarget(port=1455, path="/auth/callback", state=view.state)
    assert view.failure is not None and "Token exchange failed" in view.failure


@pytest.mark.parametrize("columns", [80, 300, 1000])
def test_gemini_rereads_the_url_after_a_refused_code(columns: int) -> None:
    raw, cols = _capture(f"gemini_oauth_pty_{columns}")
    t = Transcript(columns=cols)
    t.feed(raw)
    view = get_provider("gemini_cli").read_login(t.text, t.links)
    first = t.text.split("Please visit the following URL to authorize the application:")[1]
    assert view.url is not None and view.url.startswith(
        "https://accounts.google.com/o/oauth2/v2/auth?redirect_uri="
    )
    assert view.url not in first  # the newest URL, with its new state
    assert view.state is not None and view.url.count(view.state) == 1
    assert view.code_prompts == 2
    assert view.rejection is not None and view.rejection.startswith(
        "Failed to authenticate with authorization code"
    )


@pytest.mark.parametrize(
    ("provider", "capture"),
    [
        ("claude_code", "claude_auth_login_full_link_pty_80"),
        ("codex", "codex_login_pty_80"),
        ("gemini_cli", "gemini_oauth_pty_80"),
    ],
)
def test_partial_reads_never_report_a_cut_url(provider: str, capture: str) -> None:
    raw, columns = _capture(capture)
    final = _read(provider, raw, columns).url
    t = Transcript(columns=columns)
    seen: set[str] = set()
    for i in range(0, len(raw), 7):
        t.feed(raw[i : i + 7])
        url = get_provider(provider).read_login(t.text, t.links).url
        if url is not None:
            seen.add(url)
    assert final in seen
    # Gemini prints two URLs (a retry); every URL seen is complete, none is a prefix.
    assert all(not other.startswith(url) for url in seen for other in seen if other != url)


def test_claude_code_must_carry_the_state_of_this_sign_in() -> None:
    claude = get_provider("claude_code")
    view = LoginView(url="https://x.test/oauth/authorize?state=S1", state="S1")
    assert claude.format_code("  abc#S1\n", view) == "abc#S1"
    with pytest.raises(InvalidCode, match="including the #"):
        claude.format_code("abc", view)
    with pytest.raises(InvalidCode, match="not from this sign-in"):
        claude.format_code("abc#S0", view)


def test_codex_reads_no_code_and_gemini_needs_one_word() -> None:
    with pytest.raises(InvalidCode, match="callback URL"):
        get_provider("codex").format_code("abc", LoginView())
    gemini = get_provider("gemini_cli")
    assert gemini.format_code(" 4/0AbC-d_e \n", LoginView()) == "4/0AbC-d_e"
    with pytest.raises(InvalidCode):
        gemini.format_code("two words", LoginView())
