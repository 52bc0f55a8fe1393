"""Gemini CLI ``gemini -o stream-json`` → normalized events.

Event shapes from google-gemini/gemini-cli ``packages/core/src/output/types.ts``
(``JsonStreamEventType``), emitted by ``packages/cli/src/nonInteractiveCli.ts`` and
``packages/cli/src/utils/errors.ts``; every event also has a ``timestamp``:

- ``init{session_id, model}``
- ``message{role: "user"|"assistant", content, delta?}``: the user message is the
  prompt echoed back; assistant messages are chunks (``delta: true``).
- ``tool_use{tool_name, tool_id, parameters}``
- ``tool_result{tool_id, status: "success"|"error", output?, error?{type, message}}``
- ``error{severity: "warning"|"error", message}``: documented as non-fatal
  ("Non-fatal warnings and system errors", docs/cli/headless.md); loop detection,
  quota and retry notices.
- ``result{status: "success"|"error", error?{type, message}, stats?{total_tokens,
  input_tokens, output_tokens, cached, input, duration_ms, tool_calls, models}}``;
  ``handleError`` emits it with ``error.type`` = the error class name and exits.

Stdlib only: this module runs inside the guest image.
"""

from __future__ import annotations

from typing import Any

from remotecli.providers.events import Event, Result, SessionStarted, ToolResult, ToolUse, Usage
from remotecli.providers.stream._jsonl import JsonlParser, as_dict, as_int, as_str

# packages/core/src/utils/errors.ts: getErrorType() is the error's class name.
_AUTH_ERROR_TYPES = frozenset({"FatalAuthenticationError", "UnauthorizedError"})

# Exit codes of the FatalError subclasses in packages/core/src/utils/errors.ts
# (ExitCodes in packages/core/src/utils/exitCodes.ts). With stream-json, a failed
# auth check prints no JSON at all (validateNonInterActiveAuth.ts only logs and
# exits 41), so the exit code is the only evidence. Measured here: `gemini -p`
# without credentials exits 41, in an untrusted folder 55.
_EXIT_CODES: dict[int, tuple[str, str]] = {
    41: ("auth_required", "not signed in, or the sign-in is no longer valid"),
    42: ("exit", "the prompt or arguments were rejected"),
    44: ("exit", "the sandbox failed"),
    52: ("exit", "the configuration is invalid"),
    53: ("exit", "the session turn limit was reached"),
    54: ("exit", "a tool failed fatally"),
    55: ("untrusted_folder", "the working folder is not trusted"),
    130: ("cancelled", "cancelled"),
}


class GeminiStreamParser(JsonlParser):
    cli = "gemini"

    def __init__(self) -> None:
        super().__init__()
        self._session_id: str | None = None
        # Assistant text since the last tool call: the final answer, for Result.text.
        self._answer: list[str] = []

    def _on_event(self, event: dict[str, Any]) -> list[Event]:
        match event.get("type"):
            case "init":
                self._session_id = as_str(event.get("session_id"))
                return [
                    SessionStarted(session_id=self._session_id, model=as_str(event.get("model")))
                ]
            case "message" if event.get("role") == "assistant":
                text = as_str(event.get("content"))
                if text:
                    self._answer.append(text)
                return self._text(text)
            case "tool_use":
                self._answer.clear()
                return [
                    ToolUse(
                        id=as_str(event.get("tool_id")) or "",
                        name=as_str(event.get("tool_name")) or "",
                        input=as_dict(event.get("parameters")),
                    )
                ]
            case "tool_result":
                return [_tool_result(event)]
            case "error":
                message = as_str(event.get("message")) or "gemini reported an error"
                code = "warning" if event.get("severity") == "warning" else "cli_error"
                return self._error(message, code, fatal=False)
            case "result":
                return self._on_result(event)
        return []

    def _on_result(self, event: dict[str, Any]) -> list[Event]:
        failed = event.get("status") == "error"
        out: list[Event] = []
        if failed:
            error = as_dict(event.get("error"))
            message = as_str(error.get("message"))
            if message is not None or self._last_error is None:
                auth = as_str(error.get("type")) in _AUTH_ERROR_TYPES
                code = "auth_required" if auth else "cli_error"
                out += self._error(message or "gemini run failed", code)
            else:
                # An invalid model stream is reported as an `error` event, then a
                # bare error result: that event already said why.
                self._failed = True
        stats = as_dict(event.get("stats"))
        out += self._result(
            Result(
                text="".join(self._answer) or None,
                is_error=failed,
                # input_tokens counts the prompt including its cached part (`cached`).
                usage=Usage(
                    input_tokens=as_int(stats.get("input_tokens")),
                    output_tokens=as_int(stats.get("output_tokens")),
                    cached_input_tokens=as_int(stats.get("cached")),
                ),
                duration_ms=as_int(stats.get("duration_ms")),
                session_id=self._session_id,
            )
        )
        return out

    def _exit_meaning(self, exit_code: int) -> tuple[str, str]:
        return _EXIT_CODES.get(exit_code, ("exit", ""))


def _tool_result(event: dict[str, Any]) -> ToolResult:
    failed = event.get("status") == "error"
    output = as_str(event.get("output"))
    if failed:
        output = as_str(as_dict(event.get("error")).get("message")) or output
    return ToolResult(id=as_str(event.get("tool_id")) or "", output=output or "", is_error=failed)
