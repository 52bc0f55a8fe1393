"""FastAPI dependencies as ``Annotated`` aliases: routes stay thin."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.ext.asyncio import AsyncSession

from remotecli.controller.context import AppContext
from remotecli.controller.db import session_scope
from remotecli.controller.security import Principal, authenticate


def get_context(request: Request) -> AppContext:
    context: AppContext = request.app.state.context
    return context


Context = Annotated[AppContext, Depends(get_context)]


async def get_session(context: Context) -> AsyncIterator[AsyncSession]:
    """One transaction per request: committed when the route returns, rolled back on error."""
    async with session_scope(context.sessions) as session:
        yield session


Session = Annotated[AsyncSession, Depends(get_session)]


async def get_principal(
    context: Context,
    authorization: Annotated[str | None, Header(description="Bearer API token")] = None,
) -> Principal:
    async with context.sessions() as session:
        principal = await authenticate(session, authorization)
        await session.commit()  # records last_used_at
    return principal


Caller = Annotated[Principal, Depends(get_principal)]


async def get_admin(caller: Caller) -> Principal:
    caller.require_admin()
    return caller


Admin = Annotated[Principal, Depends(get_admin)]
