"""``remotecli run``: a prompt on a user's CLI VM, streamed to the terminal."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from remotecli.commands.api import Api
from remotecli.commands.options import Token, Url

console = Console()
err = Console(stderr=True)


def run(
    prompt: Annotated[str, typer.Argument(help="what to ask")],
    user: Annotated[str, typer.Option("--user", help="the user id")],
    provider: Annotated[str, typer.Option("--provider", help="claude_code, codex or gemini_cli")],
    model: Annotated[str | None, typer.Option(help="the CLI's model")] = None,
    url: Url = None,
    token: Token = None,
) -> None:
    """Run PROMPT with the user's own CLI account; events stream as they come."""
    api = Api.from_env(url, token)
    body: dict[str, Any] = {"userId": user, "provider": provider, "prompt": prompt}
    if model:
        body["options"] = {"model": model}
    failed = False
    for event, data in api.events("POST", "/api/prompts", json=body):
        if event == "text":
            console.print(
                escape(data.get("text", "")), end="", style="dim" if data.get("thinking") else None
            )
        elif event == "tool_use":
            console.print(
                f"\n[cyan]→ {escape(str(data.get('name')))}[/cyan] {escape(str(data.get('input')))}"
            )
        elif event == "tool_result":
            console.print(f"[cyan]← {escape(str(data.get('output', ''))[:500])}[/cyan]")
        elif event == "error" and data.get("code") != "warning":
            failed = True
            err.print(
                f"\n[red]{escape(str(data.get('code')))}[/red]: {escape(str(data.get('message')))}"
            )
        elif event == "done":
            failed = failed or data.get("status") != "succeeded"
        elif event == "result":
            usage = data.get("usage") or {}
            tokens = f"{usage.get('inputTokens')} in / {usage.get('outputTokens')} out tokens"
            err.print(f"\n[dim]done: {tokens}[/dim]")
    console.print()
    if failed:
        raise typer.Exit(1)
