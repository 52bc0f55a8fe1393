"""Parsers for the three CLIs' line-delimited JSON output (see ``providers.events``).

One ``StreamParser`` per CLI; what they share (non-JSON lines, error bookkeeping,
recognising "log in again" wording, exit codes) lives in ``_jsonl``.

Stdlib only: this package runs inside the guest image.
"""

from remotecli.providers.stream.claude_code import ClaudeStreamParser
from remotecli.providers.stream.codex import CodexStreamParser
from remotecli.providers.stream.gemini_cli import GeminiStreamParser

__all__ = ["ClaudeStreamParser", "CodexStreamParser", "GeminiStreamParser"]
