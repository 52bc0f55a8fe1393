"""A faithful, offline test bed for remote-cli: a fake OAuth server and fake CLIs.

Shipped inside the package (as structlog ships ``structlog.testing``) so the
tests and an offline demo can use it. Everything here is Python stdlib only
and runs on a bare ``python3`` (the fake CLIs are installed into the guest
image too).

- ``OAuthServer``: a real OAuth 2.0 authorization server on loopback that
  imitates Claude, OpenAI and Google under ``/claude``, ``/codex``, ``/gemini``.
- ``browser.login`` / ``browser.approve_device``: the user at a browser.
- ``bin/claude``, ``bin/codex``, ``bin/gemini`` (see ``fake_cli_bin_dir``): fake
  CLIs that print what the real ones print and log in against the server
  found in ``$REMOTECLI_TESTBED_URL``.

Run ``python -m remotecli.testbed`` for the offline demo server.
"""

from __future__ import annotations

from pathlib import Path

from remotecli.testbed.browser import BrowserError, BrowserOutcome, approve_device, login
from remotecli.testbed.oauth_server import DEFAULT_USERS, OAuthServer
from remotecli.testbed.records import IssuedToken, OAuthError

#: The environment variable through which the fake CLIs find the fake server.
TESTBED_URL_ENV = "REMOTECLI_TESTBED_URL"
#: Where the fake CLIs send their own requests (default: TESTBED_URL_ENV's value).
TESTBED_API_URL_ENV = "REMOTECLI_TESTBED_API_URL"

__all__ = [
    "DEFAULT_USERS",
    "TESTBED_API_URL_ENV",
    "TESTBED_URL_ENV",
    "BrowserError",
    "BrowserOutcome",
    "IssuedToken",
    "OAuthError",
    "OAuthServer",
    "approve_device",
    "fake_cli_bin_dir",
    "login",
]


def fake_cli_bin_dir() -> Path:
    """The directory of the ``claude``, ``codex`` and ``gemini`` fakes (put it first on PATH)."""
    return Path(__file__).resolve().parent / "bin"
