"""The one normalized event model every CLI's streaming output is parsed into.

Claude's ``stream-json``, Codex's ``exec --json`` and Gemini's ``stream-json``
differ in every field name; the rest of the platform (agent, controller,
dashboard) only ever sees these events. Each event serializes to one JSON
object with a ``type`` key, which is what the agent streams as NDJSON.

Stdlib only: this module runs inside the guest image.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol


@dataclass(frozen=True, slots=True)
class Usage:
    """Token accounting as reported by the CLI (``None`` where it reports nothing)."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_input_tokens: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputTokens": self.input_tokens,
            "outputTokens": self.output_tokens,
            "cachedInputTokens": self.cached_input_tokens,
        }


class _Event:
    type: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            key = _camel(f.name)
            out[key] = value.to_dict() if isinstance(value, Usage) else value
        return out


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


@dataclass(frozen=True, slots=True)
class SessionStarted(_Event):
    """The CLI started a conversation.

    Claude ``system/init``, Codex ``thread.started``, Gemini ``init``.
    """

    type: ClassVar[str] = "session"
    session_id: str | None = None
    model: str | None = None


@dataclass(frozen=True, slots=True)
class TextDelta(_Event):
    """Text the model produced. ``thinking`` marks reasoning/thought text."""

    type: ClassVar[str] = "text"
    text: str = ""
    thinking: bool = False


@dataclass(frozen=True, slots=True)
class ToolUse(_Event):
    """The model invoked a tool (file edit, shell command, search, ...)."""

    type: ClassVar[str] = "tool_use"
    id: str = ""
    name: str = ""
    input: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ToolResult(_Event):
    """The outcome of a tool invocation, matched to its ``ToolUse`` by ``id``."""

    type: ClassVar[str] = "tool_result"
    id: str = ""
    output: str = ""
    is_error: bool = False


@dataclass(frozen=True, slots=True)
class Result(_Event):
    """The run's final outcome, with usage and cost where the CLI reports them."""

    type: ClassVar[str] = "result"
    text: str | None = None
    is_error: bool = False
    usage: Usage = field(default_factory=Usage)
    cost_usd: float | None = None
    duration_ms: int | None = None
    session_id: str | None = None
    num_turns: int | None = None


@dataclass(frozen=True, slots=True)
class Error(_Event):
    """Something failed. ``code`` is machine readable; ``message`` is for the user.

    Known codes: ``auth_required`` (log in again), ``refresh_failed`` (the stored
    refresh token is no longer valid: log in again, nothing is wiped),
    ``cli_error`` (the CLI reported an error), ``warning`` (not fatal: a
    retry, a notice), ``untrusted_folder`` (Gemini refuses the working
    directory), ``exit`` (non-zero exit), ``timeout``, ``cancelled``,
    ``unparsed`` (a line we could not read).
    """

    type: ClassVar[str] = "error"
    message: str = ""
    code: str = "cli_error"
    exit_code: int | None = None
    stderr_tail: str | None = None


Event = SessionStarted | TextDelta | ToolUse | ToolResult | Result | Error


class StreamParser(Protocol):
    """Turns one CLI's line-delimited JSON output into normalized events.

    Stateful (it may need to pair tool uses with results or accumulate deltas);
    one instance per run. ``feed`` gets one line without its newline and never
    raises on bad input: an unreadable line becomes an ``Error(code="unparsed")``
    only when it is not something the CLI prints routinely (e.g. warnings).
    """

    def feed(self, line: str) -> list[Event]: ...

    def finish(self, exit_code: int, stderr_tail: str) -> list[Event]:
        """Called once after the process exited: emit what is still owed.

        A run that produced no ``Result`` and exited non-zero must end with an
        ``Error`` carrying ``exit_code`` and ``stderr_tail``. Authentication
        failures map to ``code="auth_required"`` / ``"refresh_failed"``.
        """
        ...
