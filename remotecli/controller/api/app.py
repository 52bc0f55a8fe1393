"""The controller's FastAPI application: lifespan, error handling, request ids, routers.

``create_app(settings)`` builds an app; the engine, vault and services are
made in the lifespan, so importing this module starts nothing.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from http import HTTPStatus

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from remotecli import __version__
from remotecli.controller import services as controller_services
from remotecli.controller.api import openapi
from remotecli.controller.api.routes import ROUTERS
from remotecli.controller.api.status import status_for
from remotecli.controller.context import AppContext, Shutdown, Startup
from remotecli.controller.db import engine as db
from remotecli.controller.db.models import ApiToken, TokenKind
from remotecli.controller.errors import database_error
from remotecli.controller.security import create_token
from remotecli.controller.settings import Settings
from remotecli.controller.vault.cipher import Vault
from remotecli.errors import RemoteCliError

log = logging.getLogger("remotecli.controller")
#: Codes for the HTTP errors Starlette raises itself (routing, not our routes).
HTTP_ERROR_CODES = {404: "not_found", 405: "method_not_allowed"}


def create_app(
    settings: Settings,
    *,
    startup: list[Startup] | None = None,
    shutdown: list[Shutdown] | None = None,
    routers: list[APIRouter] | None = None,
    services: Sequence[controller_services.Service] | None = None,
) -> FastAPI:
    """The controller's app alone (no dashboard, no demo: ``remotecli/server/app.py`` adds them).

    ``services`` replaces the controller's own (``services.SERVICES``); ``startup``/``shutdown``
    replace both (tests pick their own); ``routers`` come after the API's.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        engine = db.make_engine(settings.resolved_database_url)
        try:
            await db.wait_available(engine, settings.database_wait_seconds)
            await db.migrate(engine)
            vault = (
                Vault.from_spec(settings.vault_keys)
                if settings.vault_keys
                else Vault.from_file(settings.resolved_vault_key_file)
            )
            context = AppContext(settings, engine, db.sessionmaker(engine), vault)
            app.state.context = context
            await _bootstrap_admin(context)
            pairs = (
                list(services if services is not None else controller_services.SERVICES)
                if startup is None
                else [*((h, None) for h in startup), *((_noop, h) for h in shutdown or [])]
            )
            stops: list[Shutdown] = []
            try:
                for start, stop in pairs:
                    await start(context)
                    if stop is not None:
                        stops.append(stop)
                yield
            finally:
                # Stop what started, newest first, even when a later start failed.
                for stop in reversed(stops):
                    await stop(context)
        finally:
            await engine.dispose()

    app = FastAPI(
        title="remote-cli controller",
        version=__version__,
        lifespan=lifespan,
        description=(
            "Runs users' own Claude Code, Codex and Gemini CLI in isolated VMs. "
            "Every error is JSON with a `code` and a `message`."
        ),
    )

    @app.middleware("http")
    async def request_id(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        rid = request.headers.get("x-request-id") or secrets.token_hex(8)
        request.state.request_id = rid
        started = time.monotonic()
        response = await call_next(request)
        response.headers["x-request-id"] = rid
        log.info(
            "request",
            extra={"request_id": rid, "method": request.method, "path": request.url.path,
                   "status": response.status_code,
                   "ms": round((time.monotonic() - started) * 1000, 1)},
        )  # fmt: skip
        return response

    @app.exception_handler(RemoteCliError)
    async def remotecli_error(request: Request, exc: RemoteCliError) -> JSONResponse:
        return JSONResponse(exc.to_dict(), status_code=status_for(exc))

    @app.exception_handler(SQLAlchemyError)
    async def storage_error(request: Request, exc: SQLAlchemyError) -> JSONResponse:
        # The database down, busy or out of disk: a 503/507 the caller can act on,
        # not a 500 (or, from inside the middleware, a reset connection).
        error = database_error(exc)
        if error is None:
            raise exc
        cause = type(exc.orig if isinstance(exc, DBAPIError) else exc).__name__
        log.warning("database error: %s (%s)", error.code, cause, extra={"path": request.url.path})
        status = status_for(error)
        headers = {"Retry-After": "5"} if status == 503 else None
        return JSONResponse(error.to_dict(), status_code=status, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Starlette's own answers (no such route, method not allowed) in our error shape,
        # not its {"detail": ...}: a client maps every error by its code.
        code = HTTP_ERROR_CODES.get(exc.status_code, "http_error")
        if exc.status_code == 404:
            message = f"no endpoint {request.method} {request.url.path}; see /docs"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        else:
            message = str(exc.detail) or HTTPStatus(exc.status_code).phrase
        return JSONResponse(
            {"code": code, "message": message}, status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in exc.errors()
        ]
        return JSONResponse(
            {"code": "invalid_request", "message": "; ".join(problems), "problems": problems},
            status_code=422,
        )

    for router in [*ROUTERS, *(r for r in routers or [] if r not in ROUTERS)]:
        app.include_router(router)
    openapi.install(app)
    return app


async def _noop(context: AppContext) -> None:
    return None


async def _bootstrap_admin(context: AppContext) -> None:
    """On first start, make an admin token and write it to the state dir (mode 0600)."""
    if not context.settings.bootstrap_admin:
        return
    async with db.session_scope(context.sessions) as session:
        exists = await session.execute(
            select(ApiToken.id).where(ApiToken.kind == TokenKind.ADMIN).limit(1)
        )
        if exists.first() is not None:
            return
        _, token = await create_token(session, TokenKind.ADMIN, name="bootstrap admin")
    path = context.settings.state_dir / "admin.token"
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    log.warning("created the first admin token in %s", path)
