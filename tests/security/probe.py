"""Make a CLI inside a guest try to connect somewhere, and see from the host whether it got there.

The test bed's fake CLIs call ``$REMOTECLI_TESTBED_API_URL`` (their "provider")
from inside the VM or container with Python's urllib, which follows
redirects. So a ``Relay`` the guest is allowed to reach (an explicit forward,
or a socket bound inside the guest's own network namespace) can send the
guest's next request anywhere: it answers one request with a redirect to a
target, or with ``200`` (the control: the path to the relay works). A
``Trap`` listens on the host at every address and says whether anything
connected. A Claude prompt with a still-valid access token makes exactly one
request (``GET /claude/userinfo``) before it answers: the prompt succeeds
only if that request got a 200.

Every target is on this host: its loopback and its own addresses, never
another machine.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from remotecli.vmm.agentclient import AgentClient

CLAUDE_PATH = ".claude/.credentials.json"


def claude_files(*, expired: bool = False) -> list[dict[str, str]]:
    """A Claude credential file. Valid for an hour: the fake CLI checks it once with the
    provider (``GET /claude/userinfo``) and answers. Expired: it refreshes first (``POST
    /claude/v1/oauth/token``) and writes the rotated file itself, as the CLI's user."""
    expires = int(time.time() * 1000) + (-60_000 if expired else 3_600_000)
    oauth = {
        "accessToken": "sec-probe-access",
        "refreshToken": "sec-probe-refresh",
        "expiresAt": expires,
        "scopes": ["user:inference"],
    }
    return [{"path": CLAUDE_PATH, "content": json.dumps({"claudeAiOauth": oauth})}]


#: The access token a refresh through the relay hands out.
ROTATED = "sec-rotated-access"
#: What the relay's 200 says: enough for userinfo and for a refresh.
ANSWER = {
    "email": "probe@example.invalid",
    "access_token": ROTATED,
    "refresh_token": "sec-rotated-refresh",
    "expires_in": 3600,
    "token_type": "Bearer",
}
PROMPT = "probe"
REPLY = f"You said: {PROMPT}"


def host_addresses() -> list[str]:
    """The host's own IPv4 addresses but loopback (``ip -4 -o addr``)."""
    out = subprocess.run(
        ["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=True, timeout=10
    ).stdout
    return [line.split()[3].split("/")[0] for line in out.splitlines() if line.split()[1] != "lo"]


class Trap:
    """A listener on every address of the host at one port; it only counts who connects."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("0.0.0.0", 0))  # noqa: S104 - every host address is a target
        self.sock.listen(16)
        self.sock.setblocking(False)
        self.port: int = self.sock.getsockname()[1]

    def connections(self) -> int:
        count = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return count
            conn.close()
            count += 1

    def close(self) -> None:
        self.sock.close()


class Relay:
    """Serves HTTP on a listening socket; each request gets the next planned answer."""

    def __init__(self, sock: socket.socket) -> None:
        self.plan: list[str | None] = []  # a URL to redirect to, or None for 200
        self.seen: list[str] = []
        relay = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                relay.seen.append(self.path)
                target = relay.plan.pop(0) if relay.plan else None
                if target is None:
                    body = json.dumps(ANSWER).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                else:
                    self.send_response(302)
                    self.send_header("Location", target + self.path)
                    self.send_header("Content-Length", "0")
                    self.end_headers()

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.do_GET()

            def log_message(self, format: str, *args: Any) -> None:
                return  # quiet: the test reports what it saw

        self.httpd = HTTPServer(sock.getsockname()[:2], Handler, bind_and_activate=False)
        self.httpd.socket.close()
        self.httpd.socket = sock
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@contextlib.contextmanager
def relay_on(sock: socket.socket) -> Iterator[Relay]:
    relay = Relay(sock)
    try:
        yield relay
    finally:
        relay.close()


@contextlib.contextmanager
def trap() -> Iterator[Trap]:
    found = Trap()
    try:
        yield found
    finally:
        found.close()


def reply_of(events: list[dict[str, Any]]) -> str:
    """The answer's text of an agent prompt stream (empty if the run failed)."""
    return "".join(
        str(e.get("text", "")) for e in events if e.get("type") == "text" and not e.get("thinking")
    )


async def run_claude(agent: AgentClient) -> list[dict[str, Any]]:
    """A Claude prompt through the guest's agent: one provider request, then the answer."""
    body = {"provider": "claude_code", "prompt": PROMPT, "timeoutSeconds": 90}
    return [event async for event in agent.stream("POST", "/prompts", json=body)]


async def give_claude_credentials(agent: AgentClient, *, expired: bool = False) -> None:
    await agent.request(
        "POST",
        "/credentials/write",
        json={"provider": "claude_code", "files": claude_files(expired=expired)},
    )


async def check_reach(agent: AgentClient, relay: Relay, host: Trap, targets: list[str]) -> None:
    """The control run answers through ``relay``; redirected to each target, no run does and
    ``host`` sees no connection."""
    control = await run_claude(agent)
    assert reply_of(control) == REPLY, f"the control run (through the relay) failed: {control}"
    assert relay.seen == ["/claude/userinfo"], relay.seen
    for address in targets:
        relay.plan.append(f"http://{address}:{host.port}")
        redirected = await run_claude(agent)
        assert REPLY not in reply_of(redirected), (
            f"sent to {address}:{host.port}, the guest's CLI got an answer: {redirected}"
        )
        assert host.connections() == 0, f"the guest reached the host's listener at {address}"
    assert len(relay.seen) == 1 + len(targets), f"the relay saw {relay.seen}"
