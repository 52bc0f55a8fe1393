"""Claude Code ``claude -p --output-format stream-json --verbose`` → normalized events.

Message shapes as the Claude Agent SDK reads them (anthropics/claude-agent-sdk-python
``src/claude_agent_sdk/_internal/message_parser.py`` and ``types.py``):

- ``{"type":"system","subtype":"init","session_id","model","tools",...}``
- ``{"type":"system","subtype":"api_retry","attempt","max_retries","retry_delay_ms",
  "error_status","error"}`` while the CLI retries a failed API call (not in the SDK's
  parser; other projects' captures of 2.1.x show it).
- ``{"type":"assistant","message":{"id","model","content":[text|thinking|tool_use]},
  "parent_tool_use_id","error"?}``; ``error`` (``authentication_failed``,
  ``billing_error``, ``rate_limit``, ...) marks a synthetic message whose text is the
  CLI's complaint ("Not logged in · Please run /login").
- ``{"type":"user","message":{"content":[{"type":"tool_result","tool_use_id",
  "content": str | [blocks],"is_error"}]}}``
- ``{"type":"stream_event","event":{Anthropic streaming event}}`` with
  ``--include-partial-messages``: ``message_start``, ``content_block_delta``
  (``text_delta``/``thinking_delta``), ...; the full ``assistant`` message follows.
- ``{"type":"result","subtype":"success"|"error_*","is_error","result","errors"?,
  "session_id","total_cost_usd","usage","duration_ms","num_turns","api_error_status"?}``

Stdlib only: this module runs inside the guest image.
"""

from __future__ import annotations

from typing import Any

from remotecli.providers.events import Event, Result, SessionStarted, ToolResult, ToolUse, Usage
from remotecli.providers.stream._jsonl import (
    JsonlParser,
    as_dict,
    as_float,
    as_int,
    as_list,
    as_str,
    text_blocks,
)

# Result subtypes documented by the Agent SDK that come without any text.
_SUBTYPE_MESSAGES = {
    "error_max_turns": "claude stopped after reaching its maximum number of turns",
    "error_during_execution": "claude failed while running",
}


class ClaudeStreamParser(JsonlParser):
    cli = "claude"

    def __init__(self) -> None:
        super().__init__()
        # Messages whose text already arrived as stream_event deltas: their full
        # `assistant` copy must not print the text a second time.
        self._streamed_ids: set[str] = set()
        self._partial = False

    def _on_event(self, event: dict[str, Any]) -> list[Event]:
        match event.get("type"):
            case "system" if event.get("subtype") == "init":
                return [
                    SessionStarted(
                        session_id=as_str(event.get("session_id")),
                        model=as_str(event.get("model")),
                    )
                ]
            case "system" if event.get("subtype") == "api_retry":
                return self._on_api_retry(event)
            case "assistant":
                return self._on_assistant(event)
            case "user":
                return self._on_user(event)
            case "stream_event":
                return self._on_stream_event(event)
            case "result":
                return self._on_result(event)
        return []  # other system subtypes, rate_limit_event, ...: nothing to show

    def _on_api_retry(self, event: dict[str, Any]) -> list[Event]:
        # The CLI retries a failed API call (up to max_retries, minutes in all)
        # before it gives up with a result. A 401 will not heal by retrying: say
        # "log in again" now, so the caller may stop the run early.
        status = as_int(event.get("error_status"))
        reason = as_str(event.get("error")) or "error"
        if status == 401 or reason == "authentication_failed":
            return self._error(
                "the Claude API refused the stored credentials (HTTP 401)", "auth_required"
            )
        detail = f"{reason}, HTTP {status}" if status else reason
        attempt, limit = as_int(event.get("attempt")), as_int(event.get("max_retries"))
        retry = f"retry {attempt}/{limit}" if attempt and limit else "retrying"
        return self._error(f"Claude API call failed ({detail}); {retry}", "warning", fatal=False)

    def _on_assistant(self, event: dict[str, Any]) -> list[Event]:
        message = as_dict(event.get("message"))
        blocks = [b for b in as_list(message.get("content")) if isinstance(b, dict)]
        api_error = as_str(event.get("error"))
        if api_error is not None:
            # Not model output: the CLI's own words for a failed API call.
            text = text_blocks(blocks) or f"Claude API error: {api_error}"
            code = "auth_required" if api_error == "authentication_failed" else "cli_error"
            return self._error(text, code)

        message_id = as_str(message.get("id"))
        streamed = message_id in self._streamed_ids if message_id else self._partial
        # A sub-agent's (Task tool) prose is not the answer; its tool calls are
        # still progress worth showing, and its summary returns as a tool_result.
        show_text = not streamed and event.get("parent_tool_use_id") is None
        out: list[Event] = []
        for block in blocks:
            match block.get("type"):
                case "text" if show_text:
                    out += self._text(block.get("text"))
                case "thinking" if show_text:
                    out += self._text(block.get("thinking"), thinking=True)
                case "tool_use":
                    out.append(
                        ToolUse(
                            id=as_str(block.get("id")) or "",
                            name=as_str(block.get("name")) or "",
                            input=as_dict(block.get("input")),
                        )
                    )
        return out

    def _on_user(self, event: dict[str, Any]) -> list[Event]:
        # Only tool results: a user message's own text is the prompt (or a
        # sub-agent's prompt) echoed back.
        return [
            ToolResult(
                id=as_str(block.get("tool_use_id")) or "",
                output=text_blocks(block.get("content")),
                is_error=block.get("is_error") is True,
            )
            for block in as_list(as_dict(event.get("message")).get("content"))
            if isinstance(block, dict) and block.get("type") == "tool_result"
        ]

    def _on_stream_event(self, event: dict[str, Any]) -> list[Event]:
        if event.get("parent_tool_use_id") is not None:
            return []  # sub-agent prose, see _on_assistant
        inner = as_dict(event.get("event"))
        match inner.get("type"):
            case "message_start":
                message_id = as_str(as_dict(inner.get("message")).get("id"))
                if message_id:
                    self._streamed_ids.add(message_id)
                self._partial = True
            case "content_block_delta":
                delta = as_dict(inner.get("delta"))
                match delta.get("type"):
                    case "text_delta":
                        return self._text(delta.get("text"))
                    case "thinking_delta":
                        return self._text(delta.get("thinking"), thinking=True)
        # Tool input (input_json_delta) is taken whole from the assistant message.
        return []

    def _on_result(self, event: dict[str, Any]) -> list[Event]:
        subtype = as_str(event.get("subtype")) or ""
        # error_during_execution has been seen with is_error false: trust the subtype too.
        failed = event.get("is_error") is True or subtype.startswith("error")
        text = as_str(event.get("result"))
        out: list[Event] = []
        if failed:
            errors = [e for e in as_list(event.get("errors")) if isinstance(e, str)]
            message = (
                text
                or "; ".join(errors)
                or _SUBTYPE_MESSAGES.get(subtype)
                or f"claude run failed ({subtype or 'no subtype'})"
            )
            code = "auth_required" if event.get("api_error_status") == 401 else "cli_error"
            out += self._error(message, code)
        usage = as_dict(event.get("usage"))
        out += self._result(
            Result(
                text=text,
                is_error=failed,
                # Anthropic's input_tokens excludes cache reads, which come separately.
                usage=Usage(
                    input_tokens=as_int(usage.get("input_tokens")),
                    output_tokens=as_int(usage.get("output_tokens")),
                    cached_input_tokens=as_int(usage.get("cache_read_input_tokens")),
                ),
                cost_usd=as_float(event.get("total_cost_usd")),
                duration_ms=as_int(event.get("duration_ms")),
                session_id=as_str(event.get("session_id")),
                num_turns=as_int(event.get("num_turns")),
            )
        )
        return out
