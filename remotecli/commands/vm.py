"""``remotecli vm``: see and remove VMs (admin token)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from remotecli.commands.api import Api
from remotecli.commands.options import Token, Url

app = typer.Typer(help="List, inspect and remove VMs (admin).", no_args_is_help=True)
console = Console()


@app.command("ls")
def ls(url: Url = None, token: Token = None) -> None:
    """All VMs the controller knows."""
    vms = Api.from_env(url, token).call("GET", "/api/vms")
    table = Table("id", "role", "state", "origin", "user", "ready after", "health")
    for vm in vms["vms"]:
        ready = (vm.get("phases") or {}).get("reached", {}).get("AGENT_READY")
        health = vm.get("health") or {}
        table.add_row(
            vm["id"], vm["role"], vm["state"], str(vm.get("origin")), str(vm.get("userId") or ""),
            f"{ready:.2f} s" if ready is not None else "",
            "ok" if not health.get("consecutiveFailures") else str(health.get("lastError")),
        )  # fmt: skip
    console.print(f"backend: {vms.get('backend')}")
    console.print(table)


@app.command("show")
def show(vm_id: str, url: Url = None, token: Token = None) -> None:
    """One VM: phases, timings, health, error evidence."""
    console.print_json(json.dumps(Api.from_env(url, token).call("GET", f"/api/vms/{vm_id}")))


@app.command("logs")
def logs(
    vm_id: str,
    lines: Annotated[int, typer.Option(help="how many console lines")] = 200,
    url: Url = None,
    token: Token = None,
) -> None:
    """The VM's console, captured from its first byte."""
    print(Api.from_env(url, token).text(f"/api/vms/{vm_id}/console", lines=lines), end="")


@app.command("rm")
def rm(vm_id: str, url: Url = None, token: Token = None) -> None:
    """Destroy a VM (its credentials are synced back first)."""
    Api.from_env(url, token).call("DELETE", f"/api/vms/{vm_id}")
    console.print(f"removed {vm_id}")
