"""Options every API command takes."""

from __future__ import annotations

from typing import Annotated

import typer

Url = Annotated[
    str | None, typer.Option("--url", help="controller URL (env REMOTECLI_URL; default :4000)")
]
Token = Annotated[
    str | None,
    typer.Option("--token", help="API token (env REMOTECLI_TOKEN; default .run/admin.token)"),
]
