"""Liveness of the controller itself."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlalchemy import text

from remotecli import __version__
from remotecli.controller.api.deps import Context

router = APIRouter(tags=["system"])


@router.get("/api/health")
async def health(context: Context) -> dict[str, Any]:
    """The controller answers and its database is reachable (no token needed)."""
    async with context.sessions() as session:
        await session.execute(text("SELECT 1"))
    return {"status": "ok", "version": __version__, "services": context.running()}
