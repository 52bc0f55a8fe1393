"""``remotecli auth start``: a login from the terminal, the way the dashboard does it."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from remotecli.commands.api import Api, ApiError
from remotecli.commands.options import Token, Url
from remotecli.controller.auth.states import AuthPhase

app = typer.Typer(
    help="Connect a user's CLI account (OAuth login or API key).", no_args_is_help=True
)
console = Console(stderr=True)


@app.command("start")
def start(
    user: Annotated[str, typer.Option("--user", help="the user id")],
    provider: Annotated[str, typer.Option("--provider", help="claude_code, codex or gemini_cli")],
    mode: Annotated[str | None, typer.Option(help="login mode (default: the provider's)")] = None,
    url: Url = None,
    token: Token = None,
) -> None:
    """Start a login, show the link, relay what you paste, wait until it is done."""
    api = Api.from_env(url, token)
    body: dict[str, Any] = {"userId": user, "provider": provider}
    if mode:
        body["mode"] = mode
    if mode == "api_key":
        body["apiKey"] = typer.prompt("API key", hide_input=True)
    with console.status("starting a login VM and the CLI's login ..."):
        session = api.call("POST", "/api/auth/start", json=body)
    sid = session["id"]
    _show(session)
    while not AuthPhase(session["phase"]).ended:
        if _phase(session) is AuthPhase.AWAITING_USER and session.get("mode") != "device_code":
            answer = typer.prompt(
                "Paste the address-bar URL" if session["mode"] == "localhost_callback"
                else "Paste the code"
            ).strip()  # fmt: skip
            key = "callbackUrl" if session["mode"] == "localhost_callback" else "code"
            try:
                with console.status("checking ..."):
                    api.call("POST", f"/api/auth/sessions/{sid}/code", json={key: answer})
            except ApiError as exc:
                console.print(f"[red]{escape(exc.code)}[/red]: {escape(exc.message)}")
        session = _follow(api, sid)
    if AuthPhase(session["phase"]) is not AuthPhase.AUTHENTICATED:
        error = session.get("error") or {}
        console.print(f"[red]login {session['phase']}[/red]: {escape(str(error.get('message')))}")
        raise typer.Exit(1)
    console.print(f"[green]connected[/green] {provider} for {user}")


def _phase(session: dict[str, Any]) -> AuthPhase | None:
    """The phase the API sent, if it sent one."""
    phase = session.get("phase")
    return AuthPhase(phase) if phase is not None else None


def _show(session: dict[str, Any]) -> None:
    if session.get("loginUrl"):
        console.print("\n[bold]Open this link[/bold] (in a browser, any machine):")
        # Never wrapped: a URL broken over lines cannot be copied whole.
        console.print(session["loginUrl"], soft_wrap=True, highlight=False, markup=False)
        console.print()
    if session.get("userCode"):
        console.print(f"[bold]Enter this code there:[/bold] {session['userCode']}")
    if session.get("instructions"):
        console.print(escape(session["instructions"]))


def _follow(api: Api, sid: str) -> dict[str, Any]:
    """Wait for the next change of the session (its SSE stream), then return it."""
    last: dict[str, Any] = api.call("GET", f"/api/auth/sessions/{sid}")
    with console.status(f"{last['phase']} ..."):
        for _, data in api.events("GET", f"/api/auth/sessions/{sid}/events"):
            phase = _phase(data)
            if phase is not _phase(last) or (phase is not None and phase.ended):
                if data.get("loginUrl") and data.get("loginUrl") != last.get("loginUrl"):
                    _show(data)
                return data
    return last
