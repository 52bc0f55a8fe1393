"""The network sandbox: loopback only, a stub DNS that answers "not found"."""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import subprocess
import threading
from pathlib import Path

from tools.capture_real_clis.common import DNS_MODE, SCRATCH

# --------------------------------------------------------------------------
# network sandbox
# --------------------------------------------------------------------------


LOOPBACK_HOSTS: set[str] = set()  # names the stub DNS answers with 127.0.0.1


def _dns_answer(query: bytes) -> bytes | None:
    """NXDOMAIN (or SERVFAIL) for every name, except LOOPBACK_HOSTS -> 127.0.0.1."""
    if len(query) < 12:
        return None
    qid = query[:2]
    flags_in = struct.unpack("!H", query[2:4])[0]
    opcode = flags_in & 0x7800
    qdcount = struct.unpack("!H", query[4:6])[0]
    # parse (and echo) the question section
    pos = 12
    labels: list[str] = []
    qtype = 0
    for i in range(qdcount):
        while pos < len(query) and query[pos] != 0:
            if i == 0:
                labels.append(query[pos + 1 : pos + 1 + query[pos]].decode("ascii", "replace"))
            pos += query[pos] + 1
        if i == 0 and pos + 3 <= len(query):
            qtype = struct.unpack("!H", query[pos + 1 : pos + 3])[0]
        pos += 5
    name = ".".join(labels).lower()
    answers = b""
    ancount = 0
    if name in LOOPBACK_HOSTS:
        rcode = 0
        if qtype == 1:  # A
            answers = struct.pack("!HHHIH", 0xC00C, 1, 1, 5, 4) + socket.inet_aton("127.0.0.1")
            ancount = 1
    else:
        rcode = 3 if DNS_MODE["mode"] == "nxdomain" else 2
    flags = 0x8000 | opcode | (flags_in & 0x0100) | 0x0080 | rcode
    header = qid + struct.pack("!HHHHH", flags, qdcount, ancount, 0, 0)
    return header + query[12:pos] + answers


def _dns_server() -> None:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 53))
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind(("127.0.0.1", 53))
    tcp.listen(16)
    while True:
        ready, _, _ = select.select([udp, tcp], [], [])
        for sock in ready:
            if sock is udp:
                data, addr = udp.recvfrom(4096)
                answer = _dns_answer(data)
                if answer:
                    udp.sendto(answer, addr)
            else:
                conn, _ = tcp.accept()
                with conn:
                    conn.settimeout(2)
                    try:
                        size = struct.unpack("!H", conn.recv(2))[0]
                        answer = _dns_answer(conn.recv(size))
                        if answer:
                            conn.sendall(struct.pack("!H", len(answer)) + answer)
                    except (OSError, struct.error):
                        pass


def enter_sandbox() -> None:
    """Inside the new namespaces: loopback up, stub resolver, stub DNS."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True, timeout=10)
    resolv = SCRATCH / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
    subprocess.run(["mount", "--bind", str(resolv), "/etc/resolv.conf"], check=True, timeout=10)
    threading.Thread(target=_dns_server, daemon=True).start()
    routes = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True, timeout=10)
    assert "eth" not in routes.stdout, routes.stdout  # nothing but lo in here


def listening_ports() -> list[int]:
    """TCP ports in LISTEN state in this network namespace."""
    ports: list[int] = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                parts = line.split()
                if parts[3] == "0A":
                    ports.append(int(parts[1].rsplit(":", 1)[1], 16))
    return sorted(set(ports) - {53})
