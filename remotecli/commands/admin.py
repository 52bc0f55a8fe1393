"""``remotecli users create`` and ``remotecli tokens create|list|revoke`` (admin token)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

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


@tokens.command("list")
def list_tokens(url: Url = None, token: Token = None) -> None:
    """Every API token: id, kind, user, prefix, name, last use, revoked (never the token)."""
    rows = Api.from_env(url, token).call("GET", "/api/tokens")
    table = Table("id", "kind", "user", "prefix", "name", "last used", "revoked")
    for row in rows:
        table.add_row(
            row["id"], row["kind"], row["userId"] or "", row["prefix"], row["name"],
            row["lastUsedAt"] or "never", row["revokedAt"] or "",
        )  # fmt: skip
    Console().print(table)


@tokens.command("revoke")
def revoke_token(
    token_id: Annotated[str, typer.Argument(help="the token's id (tok_..., see tokens list)")],
    url: Url = None,
    token: Token = None,
) -> None:
    """Revoke an API token: from now on every request with it is 401 invalid_token."""
    revoked = Api.from_env(url, token).call("DELETE", f"/api/tokens/{token_id}")
    console.print(f"revoked {revoked['kind']} token {revoked['id']} ({revoked['prefix']}…)")
