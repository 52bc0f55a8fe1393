"""``python3 -m remotecli.agent``: the in-VM agent (stdlib only)."""

from __future__ import annotations

import asyncio
import os
import sys

from remotecli.agent.config import ConfigError, parse_args
from remotecli.agent.log import log
from remotecli.agent.server import serve


def main(argv: list[str] | None = None) -> int:
    try:
        config = parse_args(sys.argv[1:] if argv is None else argv, os.environ)
    except ConfigError as exc:
        log("agent.config_error", level="error", message=str(exc))
        print(f"remotecli agent: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(config))
    except OSError as exc:
        # Typically the port is taken; say which listener and what to do.
        log("agent.listen_failed", level="error", message=str(exc))
        print(
            f"remotecli agent: cannot listen: {exc}. Is another agent running? "
            "Use --tcp HOST:PORT / --unix PATH / --vsock off.",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
