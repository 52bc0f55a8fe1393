"""``python -m remotecli.testbed``: run the fake authorization server (OFFLINE DEMO / test bed).

Prints one line with the URL and how to point the fake CLIs at it, then
serves until SIGINT or SIGTERM. Stdlib only.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from remotecli.testbed import TESTBED_URL_ENV, fake_cli_bin_dir
from remotecli.testbed.oauth_server import DEFAULT_USERS, OAuthServer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m remotecli.testbed",
        description="OFFLINE DEMO / TEST BED: a fake OAuth server for Claude, Codex and Gemini "
        "on loopback. Not a real provider.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (default 0: any free port)")
    parser.add_argument(
        "--access-token-ttl", type=float, default=3600.0, help="access token lifetime in seconds"
    )
    args = parser.parse_args(argv)

    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    with OAuthServer(args.host, args.port, access_token_ttl=args.access_token_ttl) as server:
        user, password = next(iter(DEFAULT_USERS.items()))
        print(
            f"OFFLINE DEMO / TEST BED: fake OAuth server at {server.url} - "
            f"export {TESTBED_URL_ENV}={server.url} PATH={fake_cli_bin_dir()}:$PATH, "
            f"then run claude/codex/gemini; sign in as {user} / {password!r}. Ctrl-C stops.",
            flush=True,
        )
        while not stop.wait(0.2):
            pass
    print("test bed stopped", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
