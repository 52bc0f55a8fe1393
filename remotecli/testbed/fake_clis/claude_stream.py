"""``claude -p``: Claude Code's headless output (text, json, stream-json) from the fake model.

Shapes follow claude 2.1.332 (tests/fixtures/real_cli/claude_p_*.stdout): one
``system/init``, one ``assistant`` event per content block (blocks of one
message share ``message.id``), ``user`` events carrying ``tool_result``, and a
final ``result``. Stdlib only.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from remotecli.testbed.fake_clis.common import (
    TOOL_COMMAND,
    TOOL_OUTPUT,
    Script,
    err,
    hang_forever,
    new_id,
    out,
)

VERSION = "2.1.332"
DEFAULT_MODEL = "claude-opus-5-5"
NOT_LOGGED_IN = "Not logged in \u00b7 Please run /login"
REFRESH_FAILED = (
    "Failed to authenticate: OAuth session expired and could not be refreshed. "
    "Run `claude auth login` to sign in again"
)
INVALID_API_KEY = "Invalid API key \u00b7 Fix external API key"
_TOOLS = ["Task", "Bash", "Edit", "Read", "WebFetch", "WebSearch", "Write"]


def _usage(input_tokens: int = 0, output_tokens: int = 0) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output_tokens,
        "server_tool_use": {"web_search_requests": 0, "web_fetch_requests": 0},
        "service_tier": "standard",
    }


class ClaudeRun:
    """One ``claude -p`` run: owns the session id and writes events in the chosen format."""

    def __init__(self, output_format: str, model: str | None, api_key_source: str) -> None:
        self.format = output_format
        self.model = model or DEFAULT_MODEL
        self.api_key_source = api_key_source
        self.session_id = new_id()
        self.started = time.monotonic()

    def emit(self, event: dict[str, Any]) -> None:
        if self.format == "stream-json":
            out(json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n")

    def init(self, permission_mode: str) -> None:
        self.emit(
            {
                "type": "system",
                "subtype": "init",
                "cwd": os.getcwd(),
                "session_id": self.session_id,
                "tools": _TOOLS,
                "mcp_servers": [],
                "model": self.model,
                "permissionMode": permission_mode,
                "slash_commands": [],
                "apiKeySource": self.api_key_source,
                "claude_code_version": VERSION,
                "output_style": "default",
                "agents": [],
                "skills": [],
                "plugins": [],
                "uuid": new_id(),
            }
        )

    def _assistant(self, message_id: str, block: dict[str, Any], **extra: Any) -> None:
        self.emit(
            {
                "type": "assistant",
                "message": {
                    "id": message_id,
                    "type": "message",
                    "role": "assistant",
                    "model": extra.pop("model", self.model),
                    "content": [block],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": _usage(12, 4),
                },
                "parent_tool_use_id": None,
                "session_id": self.session_id,
                "uuid": new_id(),
                **extra,
            }
        )

    def _result(self, text: str, is_error: bool, num_turns: int, cost: float) -> None:
        elapsed = int((time.monotonic() - self.started) * 1000)
        usage = _usage(0, 0) if is_error else _usage(24 * num_turns, 8 * num_turns)
        result: dict[str, Any] = {
            "type": "result",
            "subtype": "success",
            "is_error": is_error,
            "duration_ms": elapsed,
            "duration_api_ms": 0 if is_error else elapsed,
            "num_turns": num_turns,
            "result": text,
            "stop_reason": "stop_sequence" if is_error else "end_turn",
            "session_id": self.session_id,
            "total_cost_usd": cost,
            "usage": usage,
            "modelUsage": {}
            if is_error
            else {
                self.model: {
                    "inputTokens": usage["input_tokens"],
                    "outputTokens": usage["output_tokens"],
                    "cacheReadInputTokens": 0,
                    "cacheCreationInputTokens": 0,
                    "webSearchRequests": 0,
                    "costUSD": cost,
                }
            },
            "permission_denials": [],
            "uuid": new_id(),
        }
        if is_error:
            result["terminal_reason"] = "api_error"
        if self.format == "stream-json":
            self.emit(result)
        elif self.format == "json":
            out(json.dumps(result, ensure_ascii=False, separators=(",", ":")) + "\n")
        else:
            out(text + "\n")

    def fail(self, error: str, text: str) -> int:
        """Claude's way to fail: a synthetic assistant message with ``error``, an error result."""
        self._assistant(
            new_id(),
            {"type": "text", "text": text},
            model="<synthetic>",
            error=error,
            is_api_error_message=True,
        )
        self._result(text, is_error=True, num_turns=1, cost=0)
        return 1

    def answer(self, script: Script) -> int:
        if script.hangs:
            hang_forever()
        if script.fails:
            message = f"API Error: 500 {script.failure}"
            code = self.fail("server_error", message)
            err(message + "\n")
            return code
        turns = 1
        if script.uses_tool:
            tool_id = "toolu_" + new_id().replace("-", "")[:24]
            self._assistant(
                "msg_" + new_id().replace("-", "")[:24],
                {
                    "type": "tool_use",
                    "id": tool_id,
                    "name": "Bash",
                    "input": {"command": TOOL_COMMAND, "description": "Print hello"},
                },
            )
            self.emit(
                {
                    "type": "user",
                    "message": {
                        "role": "user",
                        "content": [
                            {
                                "tool_use_id": tool_id,
                                "type": "tool_result",
                                "content": TOOL_OUTPUT.rstrip("\n"),
                                "is_error": False,
                            }
                        ],
                    },
                    "parent_tool_use_id": None,
                    "session_id": self.session_id,
                    "uuid": new_id(),
                    "tool_use_result": {
                        "stdout": TOOL_OUTPUT.rstrip("\n"),
                        "stderr": "",
                        "interrupted": False,
                        "isImage": False,
                    },
                }
            )
            turns = 2
        message_id = "msg_" + new_id().replace("-", "")[:24]
        for chunk in script.chunks:
            self._assistant(message_id, {"type": "text", "text": chunk})
            time.sleep(0.01)  # two chunks, observably apart
        self._result(script.reply, is_error=False, num_turns=turns, cost=0.0123 * turns)
        return 0
