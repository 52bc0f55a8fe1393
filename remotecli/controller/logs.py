"""Structured JSON logs for the controller, one object per line on stderr.

Every record carries its ``extra`` fields (``request_id``, ``vm_id``, ...).
Messages and fields never carry secrets: callers log ids, names and codes;
as a last guard, URL queries (codes, states, tokens) and bearer tokens are
cut from every string value.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

_URL_QUERY = re.compile(r"(https?://[^\s?#]+)[?#]\S*")
_BEARER = re.compile(r"(?i)(bearer\s+)\S+")
_TOKEN = re.compile(r"rcli_(service|user|admin)_[A-Za-z0-9_-]+")
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def scrub(text: str) -> str:
    text = _URL_QUERY.sub(r"\1?…", text)
    text = _BEARER.sub(r"\1…", text)
    return _TOKEN.sub(r"rcli_\1_…", text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": scrub(record.getMessage()),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = scrub(value) if isinstance(value, str) else value
        if record.exc_info:
            out["exception"] = scrub(self.formatException(record.exc_info))
        return json.dumps(out, default=str)


def configure(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("remotecli")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
