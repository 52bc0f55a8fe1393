"""Bind a listening socket inside another network namespace (a container's) from this process.

The offline demo and the tests use it to make the test bed's OAuth server answer
inside containers that have a private network. Needs root (nsenter).
"""

from __future__ import annotations

import socket
import subprocess
import sys

_LISTEN = (
    "import socket,sys\n"
    "c = socket.socket(fileno=int(sys.argv[1]))\n"
    "s = socket.socket()\n"
    "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('127.0.0.1', int(sys.argv[2])))\n"
    "s.listen(64)\n"
    "socket.send_fds(c, [b'x'], [s.fileno()])\n"
)


def listen_in_netns(netns: str, port: int) -> socket.socket:
    """A socket listening on 127.0.0.1:``port`` inside ``netns`` (a path like /proc/PID/ns/net).

    A short helper process enters the namespace, binds, and hands the listening
    socket back over a socketpair; the test process then serves on it.
    """
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with parent, child:
        subprocess.run(
            ["nsenter", f"--net={netns}", sys.executable, "-S", "-c", _LISTEN,
             str(child.fileno()), str(port)],
            pass_fds=[child.fileno()], check=True, timeout=20, capture_output=True,
        )  # fmt: skip
        _, fds, _, _ = socket.recv_fds(parent, 1, 1)
    return socket.socket(fileno=fds[0])
