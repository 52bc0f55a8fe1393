"""The coding CLIs we run, one module each, behind the ``Provider`` protocol.

Stdlib only: the agent inside the guest image imports this package.
"""

from __future__ import annotations

from remotecli.providers.base import LoginMode, Provider, ProviderError
from remotecli.providers.claude_code import ClaudeCode
from remotecli.providers.codex import Codex
from remotecli.providers.gemini_cli import GeminiCli

PROVIDERS: dict[str, Provider] = {p.name: p for p in (ClaudeCode(), Codex(), GeminiCli())}


class UnknownProvider(ProviderError):
    code = "unknown_provider"


def get_provider(name: str) -> Provider:
    try:
        return PROVIDERS[name]
    except KeyError:
        raise UnknownProvider(
            f"unknown provider {name!r}; expected one of: {', '.join(sorted(PROVIDERS))}"
        ) from None


__all__ = ["PROVIDERS", "LoginMode", "Provider", "ProviderError", "UnknownProvider", "get_provider"]
