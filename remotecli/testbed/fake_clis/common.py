"""What the three fake CLIs share: finding the test bed, HTTP, credential files, the "model".

Stdlib only: the fakes run on a bare ``python3`` in the guest image.
Two addresses, as real providers have: ``$REMOTECLI_TESTBED_URL`` is what the
user's browser opens (the printed sign-in URLs, redirect URIs), and
``$REMOTECLI_TESTBED_API_URL`` (default: the same) is what the CLI itself
calls (token exchange, refresh, device-code start and poll, userinfo, the
prompt API): ``http`` sends every request for the first to the second. A CLI
in a VM reaches the server through a forward at another address than the
browser on the host.

The "model" is deterministic (see ``Script``): the reply is ``You said: <prompt>``
in at least two chunks; "run a tool" adds one shell tool use (``echo hello``);
a prompt starting with ``fail:`` fails the way that CLI fails; ``hang`` sleeps
until killed.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlencode, urlsplit

SERVER_ENV = "REMOTECLI_TESTBED_URL"
API_ENV = "REMOTECLI_TESTBED_API_URL"
TOOL_COMMAND = "echo hello"
TOOL_OUTPUT = "hello\n"


def server_url(prog: str) -> str:
    """The server URL from ``$REMOTECLI_TESTBED_URL``; exit 2 with a clear error if unset."""
    url = os.environ.get(SERVER_ENV, "").strip().rstrip("/")
    if not url or urlsplit(url).scheme not in ("http", "https"):
        die(
            f"{prog}: this is the remote-cli test bed's FAKE {prog}, and ${SERVER_ENV} is not set "
            f"(or not an http URL). Start the fake server with `python -m remotecli.testbed` "
            f"and export {SERVER_ENV}=<its URL>.",
            2,
        )
    return url


def api_url(url: str) -> str:
    """``url`` as the CLI itself calls it: moved from $REMOTECLI_TESTBED_URL to the API URL."""
    browser = os.environ.get(SERVER_ENV, "").strip().rstrip("/")
    api = os.environ.get(API_ENV, "").strip().rstrip("/")
    if api and browser and (url == browser or url.startswith(browser + "/")):
        return api + url[len(browser) :]
    return url


def die(message: str, code: int = 1) -> NoReturn:
    sys.stdout.flush()
    sys.stderr.write(message + "\n")
    sys.stderr.flush()
    sys.exit(code)


def out(text: str, stream: Any = None) -> None:
    """Write and flush (the platform reads these streams live)."""
    target = sys.stdout if stream is None else stream
    target.write(text)
    target.flush()


def err(text: str) -> None:
    out(text, sys.stderr)


def home() -> Path:
    return Path(os.environ.get("HOME") or Path.home())


# --- HTTP --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    reason: str
    body: Any  # parsed JSON, or None
    text: str


class TransportError(Exception):
    """The server could not be reached at all (the text the CLI would print)."""


def http(
    method: str,
    url: str,
    form: Mapping[str, str] | None = None,
    json_body: Mapping[str, Any] | None = None,
    bearer: str | None = None,
    timeout: float = 15.0,
) -> Response:
    """One request with no proxies (the test bed is on loopback); never raises on HTTP status.

    Sent to ``api_url(url)``: the CLI's own calls go to the API address.
    """
    url = api_url(url)
    if urlsplit(url).scheme not in ("http", "https"):
        raise TransportError(f"not an http URL: {url}")
    headers = {"Accept": "application/json", "User-Agent": "remotecli-testbed-fake-cli"}
    data: bytes | None = None
    if json_body is not None:
        data = json.dumps(json_body).encode()
        headers["Content-Type"] = "application/json"
    elif form is not None:
        data = urlencode(form).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    if bearer is not None:
        headers["Authorization"] = f"Bearer {bearer}"
    request = urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as resp:
            raw = resp.read()
            status, reason = resp.status, resp.reason
    except urllib.error.HTTPError as exc:
        raw, status, reason = exc.read(), exc.code, exc.reason
    except OSError as exc:
        raise TransportError(f"error sending request for url ({url}): {exc}") from exc
    text = raw.decode("utf-8", "replace")
    try:
        body = json.loads(text) if text else None
    except ValueError:
        body = None
    return Response(status, str(reason), body, text)


# --- files ---------------------------------------------------------------------------


def write_private(path: Path, content: Any) -> None:
    """Write JSON (or text) atomically, mode 0600, parents 0700 (like the real CLIs)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    text = content if isinstance(content, str) else json.dumps(content, indent=2) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def new_id() -> str:
    return str(uuid.uuid4())


def now_ms() -> int:
    return int(time.time() * 1000)


def api_key_ok(key: str) -> bool:
    """Test-bed rule for API keys: any non-empty key starting with ``test-`` is valid."""
    return key.startswith("test-")


# --- the deterministic "model" ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Script:
    """What the fake model does with one prompt."""

    prompt: str

    @property
    def fails(self) -> bool:
        return self.prompt.startswith("fail:")

    @property
    def failure(self) -> str:
        return self.prompt[len("fail:") :].strip() or "simulated failure"

    @property
    def hangs(self) -> bool:
        return self.prompt.strip() == "hang"

    @property
    def uses_tool(self) -> bool:
        return "run a tool" in self.prompt

    @property
    def chunks(self) -> list[str]:
        """The reply in two (or more) pieces; joined they are ``You said: <prompt>``."""
        return ["You said: ", self.prompt]

    @property
    def reply(self) -> str:
        return "".join(self.chunks)


def hang_forever() -> NoReturn:
    while True:
        time.sleep(3600)


def run(main: Callable[[list[str]], int]) -> NoReturn:
    """Entry-point wrapper: exit with ``main``'s code; Ctrl-C is 130; a closed pipe is quiet."""
    try:
        code = main(sys.argv[1:])
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:
        code = 141
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        pass
    sys.exit(code)
