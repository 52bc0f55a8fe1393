"""HTML pages of the fake authorization server.

Plain forms, so both a person at a browser and ``testbed.browser`` can use
them. Stable hooks for code: the login and device forms have ``id="login"`` /
``id="device"``, errors are in ``id="error"``, a code to copy is in
``id="code"``. Stdlib only.
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape

_NAMES = {"claude": "Claude", "codex": "OpenAI", "gemini": "Google"}
_BANNER = (
    '<p class="banner">OFFLINE DEMO / TEST BED &mdash; remote-cli fake authorization server. '
    "Not a real provider.</p>"
)
_STYLE = (
    "body{font-family:sans-serif;max-width:40em;margin:3em auto}"
    ".banner{background:#fe8;padding:.5em}#error{color:#b00}"
    "code{font-size:1.2em;background:#eee;padding:.3em;word-break:break-all}"
)


def _page(title: str, body: str) -> str:
    return (
        "<!doctype html><html><head><meta charset=utf-8>"
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body>{_BANNER}<h1>{escape(title)}</h1>{body}</body></html>"
    )


def _error(message: str | None) -> str:
    return f'<p id="error">{escape(message)}</p>' if message else ""


def _hidden(fields: Mapping[str, str]) -> str:
    return "".join(
        f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">' for k, v in fields.items()
    )


def login_page(
    provider: str, fields: Mapping[str, str], error: str | None = None, email: str = ""
) -> str:
    body = (
        f"<p>Sign in to continue to {escape(provider)} (client "
        f"<code>{escape(fields.get('client_id', ''))}</code>).</p>"
        f"{_error(error)}"
        f'<form id="login" method="post" action="/{escape(provider)}/oauth/authorize">'
        f"{_hidden(fields)}"
        f'<p><label>Email <input name="username" type="email" value="{escape(email)}"></label></p>'
        '<p><label>Password <input name="password" type="password"></label></p>'
        '<p><button type="submit">Sign in</button></p></form>'
    )
    return _page(f"Sign in to {_NAMES.get(provider, provider)}", body)


def error_page(reason: str) -> str:
    return _page("Authorization error", f'<p id="error">{escape(reason)}</p>')


def code_page(provider: str, code: str) -> str:
    """The page a paste-code flow lands on (Claude's code#state, Google's auth code)."""
    if provider == "claude":
        hint = "Paste this into Claude Code:"
        title = "Authentication Code"
    else:
        hint = "Please copy this code, switch to your application and paste it there:"
        title = "Sign in to Gemini Code Assist"
    body = f'<p>{escape(hint)}</p><p><code id="code">{escape(code)}</code></p>'
    return _page(title, body)


def device_page(
    provider: str, user_code: str = "", error: str | None = None, done: str | None = None
) -> str:
    if done is not None:
        return _page("Device connected", f'<p id="done">{escape(done)}</p>')
    body = (
        "<p>Enter the code shown in your terminal, then sign in.</p>"
        f"{_error(error)}"
        f'<form id="device" method="post" action="/{escape(provider)}/device">'
        f'<p><label>Code <input name="user_code" value="{escape(user_code)}"></label></p>'
        '<p><label>Email <input name="username" type="email"></label></p>'
        '<p><label>Password <input name="password" type="password"></label></p>'
        '<p><button type="submit" name="action" value="approve">Continue</button> '
        '<button type="submit" name="action" value="deny">Cancel</button></p></form>'
    )
    return _page(f"Connect a device to {_NAMES.get(provider, provider)}", body)


def index_page(base_url: str, providers: tuple[str, ...]) -> str:
    items = "".join(
        f"<li>{escape(p)}: <code>{escape(base_url)}/{escape(p)}/oauth/authorize</code>, "
        f'<a href="/{escape(p)}/device">device page</a></li>'
        for p in providers
    )
    return _page("remote-cli test bed", f"<ul>{items}</ul>")
