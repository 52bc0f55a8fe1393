"""``remotecli``: the command line, a thin Typer layer over the library.

Until the controller lands (issue 4), ``remotecli up`` runs the in-VM agent
on this host so its API can be tried directly, optionally with the offline
test bed (a loopback OAuth server and fake CLIs) standing in for the
providers.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.panel import Panel

from remotecli import __version__

app = typer.Typer(
    help="remote-cli: run users' own Claude Code, Codex and Gemini CLI in isolated VMs.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(stderr=True)


@app.command()
def version() -> None:
    """Print the version."""
    print(__version__)


@app.command()
def up(
    state_dir: Annotated[Path, typer.Option(help="where tokens, sockets and HOME live")] = Path(
        ".run"
    ),
    port: Annotated[int, typer.Option(help="TCP port of the agent on 127.0.0.1")] = 8080,
    demo: Annotated[
        bool,
        typer.Option(
            envvar="REMOTECLI_DEMO",
            help="OFFLINE DEMO: a loopback OAuth server and fake CLIs instead of the real ones",
        ),
    ] = False,
) -> None:
    """Run the platform on this host (for now: the agent alone; the controller comes next)."""
    from remotecli.agent.config import ConfigError, parse_args
    from remotecli.agent.server import serve

    state_dir.mkdir(parents=True, exist_ok=True)
    token_file = state_dir / "agent.token"
    if not token_file.exists():
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(32))
    argv = [
        "--token-file", str(token_file),
        "--tcp", f"127.0.0.1:{port}",
        "--vsock", "off",
        "--unix", str(state_dir / "agent.sock"),
        "--home", str(state_dir / "home"),
    ]  # fmt: skip
    environ = dict(os.environ)
    server = None
    if demo:
        from remotecli.testbed import OAuthServer, fake_cli_bin_dir

        server = OAuthServer()
        server.start()
        environ["REMOTECLI_TESTBED_URL"] = server.url
        argv += ["--cli-path", str(fake_cli_bin_dir())]
    try:
        config = parse_args(argv, environ)
    except ConfigError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    lines = [
        f"[bold]remote-cli {__version__}[/bold]: the in-VM agent, running on this host",
        f"  API      http://127.0.0.1:{port}  and  unix:{state_dir / 'agent.sock'}",
        f"  token    {token_file}  (send it as 'Authorization: Bearer <token>')",
        f"  HOME     {config.home}  (where the CLIs keep their credentials)",
        f"  try      curl -s http://127.0.0.1:{port}/health",
    ]
    if server is not None:
        lines.append(
            f"  [yellow]OFFLINE DEMO[/yellow]: providers are the test bed at {server.url} "
            "(user alice@example.com / correct horse)"
        )
    else:
        lines.append(
            "  providers: the real CLIs on PATH; for the offline demo run "
            "[bold]REMOTECLI_DEMO=1 make up[/bold]"
        )
    lines.append("  The controller and dashboard on :4000 arrive with issue 4.")
    console.print(Panel("\n".join(lines), expand=False))
    try:
        asyncio.run(serve(config))
    except OSError as exc:
        console.print(
            f"[red]error:[/red] cannot listen on 127.0.0.1:{port}: {exc.strerror}. "
            "Is something else using it? Pass --port."
        )
        raise typer.Exit(1) from exc
    finally:
        if server is not None:
            server.stop()


def main() -> None:
    app()
