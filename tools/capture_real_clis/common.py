"""Paths and shared constants of the capture tool."""

from __future__ import annotations

from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
#: Where the captures go: the fixtures the tests read.
HERE = REPO / "tests" / "fixtures" / "real_cli"
SCRATCH = Path("/var/tmp/remotecli-capture")  # not under /tmp: codex warns there
ROWS = 50
DNS_MODE = {"mode": "nxdomain"}  # or "servfail"

Json = dict[str, Any]
