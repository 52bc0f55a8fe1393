"""``POST /identity``: a VM restored from a golden snapshot becomes itself.

Every clone of a snapshot wakes up as the same machine: the same VM token
(the golden one), hostname, random pool and a clock stopped at the moment
of the snapshot. Before the controller hands a clone to a user it calls::

    POST /identity  (with the golden token)
    {"token": "<this VM's own token>", "hostname": "rcli-3f2a...",
     "entropy": "<base64, >= 32 bytes>", "time": 1796000000.25}

and the agent, all checks first (``wire.SetIdentity.parse``) so nothing is
half-applied:

- mixes ``entropy`` into the kernel's pool and reseeds the CRNG at once
  (RNDADDENTROPY + RNDRESEEDCRNG, when root with --machine-identity; else a
  write to /dev/urandom, mixed but not credited nor reseeded), so two clones
  never share their next random numbers;
- steps the clock to ``time`` (when root) — a restored guest's clock is
  where the golden VM's stopped;
- sets the hostname;
- replaces its token, in memory and in the token file (atomically), so the
  golden token stops working here at once.

The machine-wide changes (hostname, clock, entropy credit) happen only with
``--machine-identity``, which the VM backends pass: an agent started by a
test on a developer's machine must never rename that machine. Without it
the token still rotates and the answer says what was not applied and why.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct
import time
from pathlib import Path
from typing import Any

from remotecli.agent.wire import IdentityApplied, SetIdentity

#: _IOW('R', 0x03, int[2]) from <linux/random.h>.
RNDADDENTROPY = 0x40085203
#: _IO('R', 0x07): make the CRNG reseed from the pool now. Without it a clone
#: keeps drawing the golden VM's next random bytes until the kernel's own
#: reseed interval passes (measured: two clones made the same session id).
RNDRESEEDCRNG = 0x5207


def apply(new: SetIdentity, *, machine: bool, token_file: Path | None) -> IdentityApplied:
    """Apply what this agent may; return what was done (never the token or the entropy)."""
    applied: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    is_root = os.geteuid() == 0
    if machine and is_root:
        _credit_entropy(new.entropy_bytes())
        applied["entropy"] = "credited"
    else:
        with open("/dev/urandom", "wb") as pool:
            pool.write(new.entropy_bytes())
        applied["entropy"] = "mixed"
    if not machine:
        why = "the agent runs without --machine-identity (not a VM of ours)"
        skipped.update(hostname=why, time=why)
    elif not is_root:
        skipped.update(hostname="the agent is not root", time="the agent is not root")
    else:
        socket.sethostname(new.hostname)
        applied["hostname"] = new.hostname
        if new.time is not None:
            before = time.time()
            time.clock_settime(time.CLOCK_REALTIME, new.time)
            applied["clockStep"] = round(new.time - before, 3)
    if token_file is not None:
        tmp = token_file.with_name(f".{token_file.name}.new")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(new.token + "\n")
        tmp.replace(token_file)
    applied["token"] = "rotated"  # noqa: S105 - a status word, not a secret
    return IdentityApplied(applied=applied, skipped=skipped, hostname=socket.gethostname())


def _credit_entropy(data: bytes) -> None:
    """Add ``data`` to the pool and credit it (struct rand_pool_info: count in bits, size)."""
    words = data + b"\0" * (-len(data) % 4)
    info = struct.pack("ii", len(data) * 8, len(data)) + words
    fd = os.open("/dev/random", os.O_WRONLY)
    try:
        fcntl.ioctl(fd, RNDADDENTROPY, info)
        fcntl.ioctl(fd, RNDRESEEDCRNG)
    finally:
        os.close(fd)
