"""What every CLI provider knows, behind one protocol.

A provider is pure data and parsing: which npm package, which commands log in
and how, how to read the login URL / user code / code prompt out of raw
terminal output, which files hold credentials, which environment variables
must be scrubbed, how to run a prompt headless and parse its stream. It does
no IO: the agent (inside the VM) and the controller (on the host) both use it.

Stdlib only: this module runs inside the guest image. So its errors are a
tree of their own, not the host's ``RemoteCliError`` (``remotecli/errors.py``
says so); each carries a stable ``code``, and the agent and the controller
translate them where they call a provider::

    ProviderError (ValueError)      bad input for a provider
    ├── UnsupportedLoginMode        the provider has no such login
    ├── InvalidCode                 a pasted code cannot be right
    ├── InvalidOption               a prompt option the CLI does not take
    └── UnknownProvider             (providers/__init__.py) no such provider
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import parse_qs, urlsplit

from remotecli.providers.events import StreamParser


class LoginMode(enum.StrEnum):
    """How the user proves who they are to the provider.

    - ``PASTE_CODE``: the CLI prints a URL; the provider's page shows a code the
      user pastes back (Claude ``code#state``, Gemini's auth code).
    - ``LOCALHOST_CALLBACK``: the CLI listens on 127.0.0.1 for the OAuth
      redirect; the user pastes the final ``http://localhost:<port>/...`` URL
      from the address bar and the agent replays it to the CLI (Codex).
    - ``DEVICE_CODE``: the CLI prints a verification URL and a user code and
      polls; the user only has to enter the code (Codex ``--device-auth``).
    - ``API_KEY``: no browser; the key is stored and passed in the environment.
    """

    PASTE_CODE = "paste_code"
    LOCALHOST_CALLBACK = "localhost_callback"
    DEVICE_CODE = "device_code"
    API_KEY = "api_key"


@dataclass(frozen=True, slots=True)
class LoginCommand:
    """How to start one login mode's CLI process."""

    mode: LoginMode
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    #: Gemini's NO_BROWSER flow refuses to run without a TTY; the agent always
    #: uses a PTY for logins, this records that the CLI requires one.
    needs_tty: bool = False
    #: Seconds the login may stay pending before the agent kills it.
    deadline_seconds: float = 600.0
    #: What the user must do, shown by the dashboard next to the URL.
    instructions: str = ""


@dataclass(frozen=True, slots=True)
class CredentialFile:
    """A file the CLI writes at login and reads on every run (path relative to HOME)."""

    path: str
    mode: int = 0o600


@dataclass(frozen=True, slots=True)
class SeedFile:
    """A file a second machine needs besides the credentials (onboarding flags, settings).

    ``content`` is a JSON object whose keys are merged into the file: the keys we
    need are set, everything else the user or the CLI wrote there is kept.
    """

    path: str
    content: str
    mode: int = 0o600


@dataclass(frozen=True, slots=True)
class CallbackTarget:
    """Where a localhost-callback CLI waits for its OAuth redirect."""

    port: int
    path: str
    state: str


@dataclass(frozen=True, slots=True)
class LoginView:
    """What a login's terminal output says so far (see ``Provider.read_login``).

    Computed from the whole transcript each time, so it is idempotent and a URL
    cut by a partial read is simply not reported until it is complete.
    """

    #: The latest complete login URL (a retry prints a new one: always the last).
    url: str | None = None
    #: Device flows: the one-time code the user types at ``url``.
    user_code: str | None = None
    #: Localhost-callback flows: the CLI's listener, from the URL's redirect_uri.
    callback: CallbackTarget | None = None
    #: The OAuth ``state`` of the latest URL, when the URL carries one.
    state: str | None = None
    #: How many times the CLI has asked for a pasted code (a retry asks again).
    code_prompts: int = 0
    #: The CLI's own words for why the last code was refused, if it said so.
    rejection: str | None = None
    #: The CLI's own words for a fatal login failure, if it said so.
    failure: str | None = None
    #: The CLI said the login succeeded.
    succeeded: bool = False


PERMISSIONS = ("read-only", "workspace-write", "full-access")


@dataclass(frozen=True, slots=True)
class PromptOptions:
    """Per-run knobs the user may set. ``None`` means the CLI's own default."""

    model: str | None = None
    #: One of ``PERMISSIONS``; mapped to each CLI's own flags.
    permission: str = "workspace-write"
    extra_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.permission not in PERMISSIONS:
            raise InvalidOption(
                f"permission must be one of {', '.join(PERMISSIONS)}, not {self.permission!r}"
            )


@dataclass(frozen=True, slots=True)
class PromptCommand:
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)


class Provider(Protocol):
    """One coding CLI. Implementations: claude_code, codex, gemini_cli."""

    name: str
    display_name: str
    executable: str
    npm_package: str
    npm_version: str
    login_modes: tuple[LoginMode, ...]
    credential_files: tuple[CredentialFile, ...]
    #: Variables that override the credential files; removed from every CLI
    #: process unless the user chose API-key mode.
    scrub_env: tuple[str, ...]
    #: The variable that carries the key in API-key mode.
    api_key_env: str

    def seed_files(self, mode: LoginMode) -> tuple[SeedFile, ...]:
        """Files a fresh machine needs before a login or run in ``mode``."""
        ...

    def login_command(self, mode: LoginMode) -> LoginCommand:
        """The command for ``mode``; raises ``UnsupportedLoginMode`` if it has none."""
        ...

    def read_login(self, screen: str, links: Sequence[str] = ()) -> LoginView:
        """Read the login state from the plain-text transcript of the terminal.

        ``screen`` is what ``terminal.Transcript`` made of the raw bytes (escape
        sequences interpreted); ``links`` are OSC 8 hyperlink targets seen, which
        carry a full URL even where the visible text was shortened or wrapped.
        """
        ...

    def format_code(self, code: str, view: LoginView) -> str:
        """Check a pasted code against the pending login and return the bytes to type.

        Raises ``InvalidCode`` with a user-facing message when it cannot be right.
        """
        ...

    def prompt_command(self, prompt: str, options: PromptOptions) -> PromptCommand: ...

    def stream_parser(self) -> StreamParser: ...


class ProviderError(ValueError):
    """Base of the errors providers raise on bad input; carries a stable code."""

    code = "provider_error"


class UnsupportedLoginMode(ProviderError):
    code = "unsupported_login_mode"


class InvalidCode(ProviderError):
    code = "invalid_code"


class InvalidOption(ProviderError):
    code = "invalid_option"


# --- helpers shared by the provider modules ---------------------------------

# A URL in terminal text ends at whitespace or a quote/bracket the CLI wraps it in.
_URL = re.compile(r"https?://[^\s\"'<>\x1b\x07]+")


def urls_after(text: str, marker: str) -> list[str]:
    """Every complete URL that follows an occurrence of ``marker`` (in order).

    A URL is complete once something follows it (a newline, a space): the text
    at the very end of a partial read may still grow.
    """
    found: list[str] = []
    start = 0
    while (at := text.find(marker, start)) != -1:
        start = at + len(marker)
        match = _URL.search(text, start)
        if match is None or match.end() == len(text):
            continue
        found.append(match.group(0))
    return found


def query_param(url: str, name: str) -> str | None:
    values = parse_qs(urlsplit(url).query).get(name)
    return values[0] if values else None


def last_line_with(text: str, needle: str) -> str | None:
    """The last complete line containing ``needle``, stripped."""
    lines = text.splitlines()
    if lines and not text.endswith("\n"):
        lines = lines[:-1]  # still being written
    for line in reversed(lines):
        if needle in line:
            return line.strip()
    return None
