"""``gemini -p``: Gemini CLI's headless output (text, json, stream-json) from the fake model.

Event shapes are gemini-cli 0.61.0's ``StreamJsonFormatter`` events: ``init``,
``message`` (role, content, delta), ``tool_use``, ``tool_result``, ``error``,
``result`` (status, stats). Auth is checked before trust (an untrusted folder
without credentials exits 41, as measured); untrusted exits 55. Stdlib only.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from remotecli.testbed.fake_clis import gemini_auth
from remotecli.testbed.fake_clis.common import (
    TOOL_COMMAND,
    TOOL_OUTPUT,
    Script,
    api_key_ok,
    err,
    hang_forever,
    new_id,
    out,
)
from remotecli.testbed.fake_clis.gemini_auth import (
    EXIT_AUTH,
    EXIT_UNTRUSTED,
    NON_INTERACTIVE,
    UNTRUSTED,
    GeminiAuthError,
)

INVALID_KEY = "API key not valid. Please pass a valid API key."


def fatal(message: str, code: int, error_class: str = "FatalAuthenticationError") -> int:
    """How gemini dies of a fatal error: the error with its exit code, then the message in red."""
    err(
        f"Error authenticating: {error_class}: {message}\n"
        "    at initOauthClient (remote-cli test bed fake gemini)\n"
        f"{{\n  exitCode: {code}\n}}\n"
        f"\x1b[31m{message}\x1b[0m\n"
    )
    return code


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class GeminiRun:
    def __init__(self, fmt: str, model: str) -> None:
        self.format = fmt
        self.model = model
        self.session_id = new_id()
        self.started = time.monotonic()
        self.tool_calls = 0

    def emit(self, event: dict[str, Any]) -> None:
        if self.format == "stream-json":
            out(json.dumps({"type": event.pop("type"), "timestamp": _now(), **event}) + "\n")

    def stats(self, text: str) -> dict[str, Any]:
        inputs, outputs = 812, 4 + len(text) // 4
        return {
            "total_tokens": inputs + outputs,
            "input_tokens": inputs,
            "output_tokens": outputs,
            "cached": 0,
            "input": inputs,
            "duration_ms": int((time.monotonic() - self.started) * 1000),
            "tool_calls": self.tool_calls,
            "models": {},
        }

    def error(self, message: str, error_type: str = "Error") -> int:
        self.emit({"type": "error", "severity": "error", "message": message})
        self.emit(
            {
                "type": "result",
                "status": "error",
                "error": {"type": error_type, "message": message},
                "stats": self.stats(""),
            }
        )
        if self.format == "json":
            out(
                json.dumps(
                    {
                        "session_id": self.session_id,
                        "error": {"type": error_type, "message": message},
                    },
                    indent=2,
                )
                + "\n"
            )
        err(f"[ERROR] [API Error: {message}]\n")
        return 1

    def answer(self, script: Script) -> int:
        self.emit({"type": "message", "role": "user", "content": script.prompt})
        if script.hangs:
            hang_forever()
        if script.fails:
            return self.error(script.failure)
        if script.uses_tool:
            tool_id = f"run_shell_command-{int(time.time() * 1000)}-{new_id()[:8]}"
            self.emit(
                {
                    "type": "tool_use",
                    "tool_name": "run_shell_command",
                    "tool_id": tool_id,
                    "parameters": {"command": TOOL_COMMAND, "description": "Print hello"},
                }
            )
            self.tool_calls += 1
            self.emit(
                {
                    "type": "tool_result",
                    "tool_id": tool_id,
                    "status": "success",
                    "output": TOOL_OUTPUT.rstrip("\n"),
                }
            )
        for chunk in script.chunks:
            self.emit({"type": "message", "role": "assistant", "content": chunk, "delta": True})
            time.sleep(0.01)
        self.emit({"type": "result", "status": "success", "stats": self.stats(script.reply)})
        if self.format == "json":
            out(
                json.dumps(
                    {
                        "session_id": self.session_id,
                        "response": script.reply,
                        "stats": self.stats(script.reply),
                    },
                    indent=2,
                )
                + "\n"
            )
        elif self.format == "text":
            out(script.reply + "\n")
        return 0


def headless(server: str, prompt: str, fmt: str, skip_trust: bool, model: str) -> int:
    api_key = os.environ.get("GEMINI_API_KEY", "")
    if not api_key:
        auth_type = gemini_auth.selected_auth_type()
        if auth_type is None:
            err(gemini_auth.no_auth_message() + "\n")
            return EXIT_AUTH
        try:
            gemini_auth.ensure_access(server)
        except LookupError:
            return fatal(NON_INTERACTIVE, EXIT_AUTH)
        except GeminiAuthError as exc:
            return fatal(f"Failed to refresh the access token: {exc}", EXIT_AUTH)
    if not skip_trust and gemini_auth.is_trusted(Path.cwd()) is not True:
        err(f"\x1b[31m{UNTRUSTED}\x1b[0m\n")
        return EXIT_UNTRUSTED
    run_ = GeminiRun(fmt, model)
    run_.emit({"type": "init", "session_id": run_.session_id, "model": model})
    if api_key and not api_key_ok(api_key):
        run_.emit({"type": "message", "role": "user", "content": prompt})
        return run_.error(INVALID_KEY, "ApiError")
    return run_.answer(Script(prompt))
