"""What the three stream parsers share: line handling, error bookkeeping, auth wording.

Each CLI prints one JSON object per line on stdout, but also, now and then, a
plain warning; and a process killed mid-write leaves half an object. A parser
reads what it can, keeps the rest for diagnostics and never raises.

Stdlib only: this module runs inside the guest image.
"""

from __future__ import annotations

import json
import math
import re
from collections import deque
from typing import Any, ClassVar

from remotecli.providers.events import Error, Event, Result, TextDelta

#: Plain-text stdout lines kept for diagnostics; a chatty CLI must not grow memory.
NOISE_LINES_KEPT = 200
#: How much of an unreadable line an ``unparsed`` error quotes.
_PREVIEW_CHARS = 200

_AUTH_CODES = frozenset({"auth_required", "refresh_failed"})

# Checked first: these messages usually also say 401/unauthorized, but the useful
# news is that the stored refresh token is dead (log in again; nothing to wipe).
_REFRESH_FAILED = re.compile(
    # openai/codex codex-rs/core auth: error codes in the token endpoint's answer ...
    r"refresh_token_(?:expired|reused|invalidated)"
    # ... and every REFRESH_TOKEN_*_MESSAGE ("Your access token could not be refreshed ...").
    r"|could not be refreshed"
    # OAuth 2.0 (RFC 6749 section 5.2) for a revoked/expired refresh token; Google
    # (Gemini's oauth-personal login) answers it with this error_description.
    r"|invalid_grant|token has been expired or revoked",
    re.IGNORECASE,
)
_AUTH_REQUIRED = re.compile(
    r"\b401\b|unauthori[sz]ed|unauthenticated|missing bearer"
    # Claude Code: assistant `error: "authentication_failed"`, API `authentication_error`,
    # "Not logged in · Please run /login", "Invalid API key · Please run /login".
    r"|authentication_(?:failed|error)|not logged in|please run /login|invalid api key"
    r"|not authenticated",
    re.IGNORECASE,
)


def classify_auth(message: str) -> str | None:
    """``refresh_failed`` / ``auth_required`` when ``message`` says so, else ``None``."""
    if _REFRESH_FAILED.search(message):
        return "refresh_failed"
    if _AUTH_REQUIRED.search(message):
        return "auth_required"
    return None


# --- tolerant field access: a field of the wrong type reads as absent ---------


def as_str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def as_int(value: object) -> int | None:
    if isinstance(value, bool):  # bool is an int subclass; True is not a token count
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return round(value)
    return None


def as_float(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    return float(value) if isinstance(value, int | float) else None


def as_dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def text_blocks(content: object) -> str:
    """The text of a content value: a string, or a list of ``{"type": "text"}`` blocks."""
    if isinstance(content, str):
        return content
    parts = [
        text
        for block in as_list(content)
        if isinstance(block, dict)
        and block.get("type") == "text"
        and (text := as_str(block.get("text")))
    ]
    return "\n".join(parts)


class JsonlParser:
    """Base of the three parsers: subclasses implement ``_on_event`` for one decoded object."""

    #: The executable's name, used in messages.
    cli: ClassVar[str]

    def __init__(self) -> None:
        #: Plain-text lines the CLI printed among its JSON (warnings, banners).
        self.noise: deque[str] = deque(maxlen=NOISE_LINES_KEPT)
        self._result_seen = False
        # A fatal Error was emitted: the run's failure is explained, finish() adds nothing.
        self._failed = False
        self._last_error: str | None = None
        self._auth_reported: set[str] = set()

    def feed(self, line: str) -> list[Event]:
        text = line.strip()
        if not text:
            return []
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError):
            if text.startswith("{"):
                return [self._unparsed("is not valid JSON", text)]
            self.noise.append(text)
            return []
        if not isinstance(obj, dict):  # a bare number or string decodes too: still noise
            self.noise.append(text)
            return []
        try:
            return self._on_event(obj)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            # The handlers read fields tolerantly; this is the last line of defence
            # for a shape nobody foresaw. The promise is that feed never raises.
            return [self._unparsed(f"has an unexpected shape ({type(exc).__name__})", text)]

    def finish(self, exit_code: int, stderr_tail: str) -> list[Event]:
        if exit_code == 0 or self._result_seen or self._failed:
            return []
        code, meaning = self._exit_meaning(exit_code)
        if code == "exit":
            code = classify_auth(stderr_tail) or code
        if exit_code < 0:  # subprocess reports death by signal N as -N
            message = f"{self.cli} was killed by signal {-exit_code}"
        else:
            message = f"{self.cli} exited with code {exit_code}"
        if meaning:
            message += f": {meaning}"
        return [Error(message=message, code=code, exit_code=exit_code, stderr_tail=stderr_tail)]

    # --- for subclasses ------------------------------------------------------

    def _on_event(self, event: dict[str, Any]) -> list[Event]:
        raise NotImplementedError

    def _exit_meaning(self, exit_code: int) -> tuple[str, str]:
        """The error code and a short explanation for a documented exit code."""
        return "exit", ""

    def _text(self, value: object, *, thinking: bool = False) -> list[Event]:
        text = as_str(value)
        return [TextDelta(text=text, thinking=thinking)] if text else []

    def _error(self, message: str, code: str = "cli_error", *, fatal: bool = True) -> list[Event]:
        """One Error; an auth/refresh wording overrides ``code`` and makes it fatal.

        CLIs often report one failure twice (Codex: ``error`` then ``turn.failed``;
        Claude: the synthetic assistant message then ``result``): the same message
        right again is dropped, and so is a second auth/refresh error of one kind.
        """
        found = classify_auth(message)
        if found and code not in _AUTH_CODES:
            code, fatal = found, True
        self._failed = self._failed or fatal
        # "Log in again" needs saying once, however many retries and summaries repeat it.
        if message == self._last_error or code in self._auth_reported:
            return []
        self._last_error = message
        if code in _AUTH_CODES:
            self._auth_reported.add(code)
        return [Error(message=message, code=code)]

    def _result(self, result: Result) -> list[Event]:
        self._result_seen = True
        return [result]

    def _unparsed(self, why: str, text: str) -> Error:
        preview = text if len(text) <= _PREVIEW_CHARS else text[:_PREVIEW_CHARS] + "…"
        return Error(message=f"{self.cli} printed a line that {why}: {preview}", code="unparsed")
