"""``python -m remotecli.vmm.firecracker install [--force] | which``: the pinned binaries."""

from __future__ import annotations

import sys

from remotecli.errors import RemoteCliError
from remotecli.vmm.firecracker.binaries import main

if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except RemoteCliError as exc:
        print(exc.message, file=sys.stderr)
        raise SystemExit(1) from None
