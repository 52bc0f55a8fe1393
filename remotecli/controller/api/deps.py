"""FastAPI dependencies as ``Annotated`` aliases: routes stay thin."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from remotecli.controller.context import AppContext
from remotecli.controller.db.engine import session_scope
from remotecli.controller.errors import Forbidden, StorageFull, database_error
from remotecli.controller.security import (
    CSRF_HEADER,
    SAFE_METHODS,
    SESSION_COOKIE,
    Principal,
    authenticate,
    authenticate_token,
)


def get_context(request: Request) -> AppContext:
    context: AppContext = request.app.state.context
    return context


Context = Annotated[AppContext, Depends(get_context)]

log = logging.getLogger("remotecli.controller.auth")


async def get_session(context: Context) -> AsyncIterator[AsyncSession]:
    """One transaction per request: committed when the route returns, rolled back on error."""
    async with session_scope(context.sessions) as session:
        yield session


# scope="function": commit before the answer is sent. FastAPI's default ends a yield
# dependency after the response, so a client could see 201 for a row not yet committed
# (or never committed, if the commit fails) and miss it on its very next request.
Session = Annotated[AsyncSession, Depends(get_session, scope="function")]


async def get_principal(
    request: Request,
    context: Context,
    authorization: Annotated[str | None, Header(description="Bearer API token")] = None,
) -> Principal:
    """The bearer header's token, else the dashboard's cookie (see security.py on CSRF)."""
    cookie = request.cookies.get(SESSION_COOKIE)
    async with context.sessions() as session:
        if authorization is None and cookie:
            require_csrf_header(request)
            principal = await authenticate_token(session, cookie)
        else:
            principal = await authenticate(session, authorization)
        await _record_last_use(session)
    return principal


async def _record_last_use(session: AsyncSession) -> None:
    """Commit the token's ``last_used_at``; a full disk must not turn every read into a 507.

    The token was checked by a read. Its last use is bookkeeping: when the disk
    is full the caller still gets in (a route that writes meets the same disk
    and answers 507 itself). A database that is away is raised as usual.
    """
    try:
        await session.commit()
    except SQLAlchemyError as exc:
        if not isinstance(database_error(exc), StorageFull):
            raise
        await session.rollback()
        log.warning("a token's last use was not recorded: the database's disk is full")


def require_csrf_header(request: Request) -> None:
    """A browser request that changes something must prove it comes from our own pages."""
    if request.method not in SAFE_METHODS and request.headers.get(CSRF_HEADER) != "1":
        raise Forbidden(
            f"a request authenticated by the session cookie must send '{CSRF_HEADER}: 1'",
            code="csrf_required",
        )


Caller = Annotated[Principal, Depends(get_principal)]


async def get_admin(caller: Caller) -> Principal:
    caller.require_admin()
    return caller


Admin = Annotated[Principal, Depends(get_admin)]
