"""Structured JSON logs on stdout, one object per line.

Callers pass only safe fields: ids, provider names, phases, exit codes,
durations. Never a URL with a query, a code, a token or a file's content; the
``redact`` helper exists for the few places that must mention text a CLI
printed.
"""

from __future__ import annotations

import json
import re
import sys
import time
from typing import Any, TextIO

_stream: TextIO = sys.stdout

# A URL's query and fragment can carry state, codes or tokens.
_URL_QUERY = re.compile(r"(https?://[^\s?#]+)[?#][^\s]*")


def configure(stream: TextIO) -> None:
    global _stream
    _stream = stream


def redact(text: str) -> str:
    """Drop the query of every URL in ``text`` (state, codes and tokens live there)."""
    return _URL_QUERY.sub(r"\1?…", text)


def log(event: str, level: str = "info", **fields: Any) -> None:
    record = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        + f".{int(time.time() % 1 * 1000):03d}Z",
        "level": level,
        "event": event,
        **fields,
    }
    try:
        _stream.write(json.dumps(record, default=str) + "\n")
        _stream.flush()
    except (OSError, ValueError):
        pass  # a closed stdout must never take the agent down
