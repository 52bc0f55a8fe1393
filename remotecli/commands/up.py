"""``remotecli up``: the controller (API on :4000) on the best backend this host runs, SQLite."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel

from remotecli import __version__
from remotecli.errors import RemoteCliError

console = Console(stderr=True)


def up(
    host: Annotated[
        str, typer.Option(envvar="REMOTECLI_HOST", help="address to listen on")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="REMOTECLI_PORT", help="API port")] = 4000,
    state_dir: Annotated[
        Path, typer.Option(envvar="REMOTECLI_STATE_DIR", help="database, vault key, VM state")
    ] = Path(".run"),
    demo: Annotated[
        bool,
        typer.Option(
            envvar="REMOTECLI_DEMO",
            help="OFFLINE DEMO: the test bed and fake CLIs stand in for the providers",
        ),
    ] = False,
) -> None:
    """Run the platform: the controller's API, its VMs, SQLite (zero set-up)."""
    import uvicorn

    from remotecli.controller.db import engine as db
    from remotecli.controller.fleet.runtime import choose_backend
    from remotecli.controller.logs import configure
    from remotecli.controller.settings import Settings
    from remotecli.server.app import create_app

    settings = Settings(host=host, port=port, state_dir=state_dir, demo=demo)
    try:
        if settings.database_url:  # the default SQLite file needs nothing
            where = escape(db.where(settings.database_url))
            with console.status(f"waiting for the database {where}"):
                seconds = settings.database_wait_seconds
                asyncio.run(db.check_available(settings.database_url, seconds))
        backend, reason = choose_backend(settings)
        if backend != "fake" and settings.image is None:
            _ensure_image(demo)
    except RemoteCliError as exc:
        console.print(f"[red]error[/red] ({exc.code}): {escape(exc.message)}")
        raise typer.Exit(1) from exc
    configure()
    base = f"http://{host}:{port}"
    lines = [
        f"[bold]remote-cli {__version__}[/bold]  controller on {base}  (API docs: {base}/docs)",
        f"  VMs      {backend} backend ({escape(reason)})",
        f"  state    {settings.state_dir.resolve()}  (SQLite, vault key, admin token)",
        f"  admin    {settings.state_dir / 'admin.token'}  (created on first start)",
        "  next     .venv/bin/remotecli users create alice",
        "           .venv/bin/remotecli auth start --user alice --provider codex",
        '           .venv/bin/remotecli run --user alice --provider codex "hello"',
    ]
    if demo:
        lines.append(
            "  [yellow]OFFLINE DEMO[/yellow]: providers are the test bed; sign in as "
            "alice@example.com / correct horse"
        )
    else:
        lines.append(
            "  providers: the real CLIs in the image; for the offline demo: "
            "[bold]REMOTECLI_DEMO=1 make up[/bold]"
        )
    if backend in ("nspawn", "fake"):
        lines.append(
            f"  [yellow]isolation[/yellow]: {backend} is weaker than a VM (see `remotecli doctor`)"
        )
    console.print(Panel("\n".join(lines), expand=False))
    uvicorn.run(create_app(settings), host=host, port=port, log_config=None, access_log=False)


def _ensure_image(demo: bool) -> None:
    """The golden image VMs boot: built once with progress shown, then reused from the cache.

    The demo's has the test bed's fake CLIs; otherwise the real, pinned CLIs
    from npm (~1 minute and ~1.3 GB the first time).
    """
    from remotecli.images.build import build_image
    from remotecli.images.recipe import BuildOptions
    from remotecli.images.report import RichBuildProgress
    from remotecli.images.store import list_images
    from remotecli.providers import PROVIDERS

    if demo:
        options = BuildOptions(test_clis=True)
    elif any(not image.test_clis and image.clis for image in list_images()):
        return  # the controller picks the newest image with the real CLIs
    else:
        options = BuildOptions(providers=tuple(PROVIDERS))
    with RichBuildProgress(console) as progress:
        asyncio.run(build_image(options, progress))
