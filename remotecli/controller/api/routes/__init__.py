"""The API's routers, one module per area; ``api/app.py`` includes them in this order."""

from __future__ import annotations

from fastapi import APIRouter

from remotecli.controller.api.routes import auth, credentials, prompts, session, system, users, vms

ROUTERS: list[APIRouter] = [
    system.router,
    session.router,
    users.router,
    auth.router,
    credentials.router,
    prompts.router,
    vms.router,
]
