"""Codex ``codex exec --json`` → normalized events.

Event shapes from openai/codex ``codex-rs/exec/src/exec_events.rs`` (``ThreadEvent``)
and how ``event_processor_with_jsonl_output.rs`` emits them:

- ``thread.started{thread_id}``, ``turn.started``,
  ``turn.completed{usage{input_tokens,cached_input_tokens,output_tokens}}``,
  ``turn.failed{error{message}}``, and a top-level ``error{message}``;
- ``item.started|item.updated|item.completed{item{id,type,...}}`` with item types
  ``agent_message{text}``, ``reasoning{text}``, ``command_execution{command,
  aggregated_output,exit_code,status}``, ``file_change{changes[{path,kind}],status}``,
  ``mcp_tool_call{server,tool,arguments,result{content},error{message},status}``,
  ``web_search{query}``, ``todo_list{items}``, ``error{message}`` (non-fatal).

Agent messages and reasoning only ever arrive whole, in ``item.completed``.
A file change may first appear as ``item.updated`` (the patch is announced before
it is applied) or only at completion, so a tool is announced on whichever comes first.

Stdlib only: this module runs inside the guest image.
"""

from __future__ import annotations

from typing import Any

from remotecli.providers.events import Event, Result, SessionStarted, ToolResult, ToolUse, Usage
from remotecli.providers.stream._jsonl import (
    JsonlParser,
    as_dict,
    as_int,
    as_list,
    as_str,
    text_blocks,
)

_TOOL_ITEMS = frozenset({"command_execution", "file_change", "mcp_tool_call", "web_search"})

# codex-rs/core notify_stream_error: "Reconnecting... {retries}/{max_retries}" while
# it retries a dropped stream. The turn goes on (offline, forever): a warning.
_RETRYING = "Reconnecting..."


class CodexStreamParser(JsonlParser):
    cli = "codex"

    def __init__(self) -> None:
        super().__init__()
        self._thread_id: str | None = None
        self._announced: set[str] = set()
        # turn.completed carries no text; the last agent message is the answer.
        self._last_message: str | None = None

    def _on_event(self, event: dict[str, Any]) -> list[Event]:
        match event.get("type"):
            case "thread.started":
                self._thread_id = as_str(event.get("thread_id"))
                return [SessionStarted(session_id=self._thread_id)]
            case "turn.started":
                self._last_message = None
            case "item.started" | "item.updated":
                return self._announce(as_dict(event.get("item")))
            case "item.completed":
                return self._on_completed(as_dict(event.get("item")))
            case "turn.completed":
                usage = as_dict(event.get("usage"))
                return self._result(
                    Result(
                        text=self._last_message,
                        # OpenAI's input_tokens includes the cached ones.
                        usage=Usage(
                            input_tokens=as_int(usage.get("input_tokens")),
                            output_tokens=as_int(usage.get("output_tokens")),
                            cached_input_tokens=as_int(usage.get("cached_input_tokens")),
                        ),
                        session_id=self._thread_id,
                    )
                )
            case "turn.failed":
                error = as_dict(event.get("error"))
                return self._error(as_str(error.get("message")) or "codex turn failed")
            case "error":
                message = as_str(event.get("message")) or "codex reported an error"
                if message.startswith(_RETRYING):
                    return self._error(message, "warning", fatal=False)
                return self._error(message)
        return []

    def _on_completed(self, item: dict[str, Any]) -> list[Event]:
        kind = as_str(item.get("type"))
        match kind:
            case "agent_message":
                self._last_message = as_str(item.get("text")) or self._last_message
                return self._text(item.get("text"))
            case "reasoning":
                return self._text(item.get("text"), thinking=True)
            case "error":
                # exec emits config warnings, deprecation notices and model reroutes this way.
                message = as_str(item.get("message")) or "codex reported a problem"
                return self._error(message, "warning", fatal=False)
            case _ if kind in _TOOL_ITEMS:
                return [*self._announce(item), _tool_result(item)]
        return []  # todo_list and newer item types

    def _announce(self, item: dict[str, Any]) -> list[Event]:
        """The ToolUse for a tool item, once per item id."""
        item_id = as_str(item.get("id")) or ""
        if as_str(item.get("type")) not in _TOOL_ITEMS or item_id in self._announced:
            return []
        self._announced.add(item_id)
        return [_tool_use(item_id, item)]


def _tool_use(item_id: str, item: dict[str, Any]) -> ToolUse:
    match item.get("type"):
        case "command_execution":
            return ToolUse(
                id=item_id, name="command_execution", input={"command": item.get("command")}
            )
        case "file_change":
            changes = [c for c in as_list(item.get("changes")) if isinstance(c, dict)]
            return ToolUse(id=item_id, name="file_change", input={"changes": changes})
        case "mcp_tool_call":
            # Claude Code's naming for MCP tools, so one dashboard rule fits both.
            name = f"mcp__{item.get('server')}__{item.get('tool')}"
            arguments = item.get("arguments")
            if not isinstance(arguments, dict):
                arguments = {} if arguments is None else {"arguments": arguments}
            return ToolUse(id=item_id, name=name, input=arguments)
        case _:
            return ToolUse(id=item_id, name="web_search", input={"query": item.get("query")})


def _tool_result(item: dict[str, Any]) -> ToolResult:
    item_id = as_str(item.get("id")) or ""
    status = item.get("status")
    match item.get("type"):
        case "command_execution":
            exit_code = as_int(item.get("exit_code"))
            failed = status in ("failed", "declined") or exit_code not in (None, 0)
            return ToolResult(
                id=item_id, output=as_str(item.get("aggregated_output")) or "", is_error=failed
            )
        case "file_change":
            lines = [
                f"{change.get('kind')} {change.get('path')}"
                for change in as_list(item.get("changes"))
                if isinstance(change, dict)
            ]
            return ToolResult(id=item_id, output="\n".join(lines), is_error=status == "failed")
        case "mcp_tool_call":
            error = as_str(as_dict(item.get("error")).get("message"))
            if error is not None:
                return ToolResult(id=item_id, output=error, is_error=True)
            output = text_blocks(as_dict(item.get("result")).get("content"))
            return ToolResult(id=item_id, output=output, is_error=status == "failed")
        case _:
            return ToolResult(id=item_id)  # web_search reports no results in exec
