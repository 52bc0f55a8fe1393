"""``remotecli users create`` and ``remotecli tokens create`` (admin token)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console

from remotecli.commands.api import Api
from remotecli.commands.options import Token, Url

users = typer.Typer(help="Users of the platform (admin).", no_args_is_help=True)
tokens = typer.Typer(help="API tokens (admin).", no_args_is_help=True)
console = Console(stderr=True)


@users.command("create")
def create_user(
    user_id: Annotated[str, typer.Argument(help="the web product's id for this user")],
    name: Annotated[str | None, typer.Option(help="a display name")] = None,
    url: Url = None,
    token: Token = None,
) -> None:
    """Create a user."""
    body: dict[str, Any] = {"id": user_id}
    if name:
        body["name"] = name
    Api.from_env(url, token).call("POST", "/api/users", json=body)
    console.print(f"created user {user_id}")


@tokens.command("create")
def create_token(
    kind: Annotated[str, typer.Argument(help="service | user | admin")],
    user: Annotated[str | None, typer.Option("--user", help="the user (user tokens)")] = None,
    name: Annotated[str, typer.Option(help="what it is for")] = "",
    url: Url = None,
    token: Token = None,
) -> None:
    """Create an API token; it is printed once (stdout), store it now."""
    body: dict[str, Any] = {"kind": kind, "name": name}
    if user:
        body["userId"] = user
    created = Api.from_env(url, token).call("POST", "/api/tokens", json=body)
    console.print(f"created {created['kind']} token {created['id']} (shown once):")
    print(created["token"])
