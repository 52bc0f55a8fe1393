"""Users and API tokens (admin only, except a service token may create users)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from remotecli.controller.api.deps import Caller, Session
from remotecli.controller.api.schemas import (
    TokenCreate,
    TokenInfo,
    TokenOut,
    UserCreate,
    UserOut,
)
from remotecli.controller.apimodel import UserId
from remotecli.controller.db.models import ApiToken, TokenKind, User, utcnow
from remotecli.controller.errors import BadRequest, Conflict, Forbidden, NotFound
from remotecli.controller.security import create_token

router = APIRouter(tags=["users"])

#: A picker, not an export: the newest users.
MAX_LISTED = 500


@router.post(
    "/api/users", status_code=201, response_model=UserOut, response_model_by_alias=True,
    responses={409: {"description": "user_exists"}},
)  # fmt: skip
async def create_user(body: UserCreate, caller: Caller, session: Session) -> User:
    if caller.kind not in (TokenKind.ADMIN, TokenKind.SERVICE):
        raise Forbidden("creating users needs an admin or service token", code="admin_required")
    user = User(id=body.id, name=body.name)
    session.add(user)
    try:
        await session.flush()
    except IntegrityError as exc:
        raise Conflict(f"user {body.id!r} already exists", code="user_exists") from exc
    return user


@router.get("/api/users", response_model=list[UserOut], response_model_by_alias=True)
async def list_users(caller: Caller, session: Session) -> list[User]:
    """Every user, newest first (admin or service token): the dashboard's user picker."""
    if caller.kind not in (TokenKind.ADMIN, TokenKind.SERVICE):
        raise Forbidden("listing users needs an admin or service token", code="admin_required")
    rows = await session.execute(select(User).order_by(User.created_at.desc()).limit(MAX_LISTED))
    return list(rows.scalars())


@router.get("/api/users/{user_id}", response_model=UserOut, response_model_by_alias=True)
async def get_user(user_id: UserId, caller: Caller, session: Session) -> User:
    caller.require_user(user_id)
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound(f"no user {user_id!r}", code="unknown_user")
    return user


@router.post(
    "/api/tokens", status_code=201, response_model=TokenOut, response_model_by_alias=True,
    responses={404: {"description": "unknown_user (a user token for a user that does not exist)"}},
)  # fmt: skip
async def create_api_token(body: TokenCreate, caller: Caller, session: Session) -> TokenOut:
    caller.require_admin()
    kind = TokenKind(body.kind)
    if kind is TokenKind.USER:
        if body.user_id is None:
            raise BadRequest("a user token needs 'userId'", code="user_id_required")
        if await session.get(User, body.user_id) is None:
            raise NotFound(f"no user {body.user_id!r}", code="unknown_user")
    elif body.user_id is not None:
        raise BadRequest(f"a {kind.value} token acts for every user: drop 'userId'",
                         code="user_id_not_allowed")  # fmt: skip
    row, token = await create_token(session, kind, user_id=body.user_id, name=body.name)
    return TokenOut(id=row.id, kind=row.kind.value, user_id=row.user_id, prefix=row.prefix,
                    name=row.name, token=token)  # fmt: skip


TokenId = Annotated[str, Path(max_length=32, examples=["tok_0123456789abcdef"])]


@router.get("/api/tokens", response_model=list[TokenInfo], response_model_by_alias=True)
async def list_api_tokens(caller: Caller, session: Session) -> list[ApiToken]:
    """Every API token, newest first (admin): ids, kinds, prefixes, last use; never the token."""
    caller.require_admin()
    rows = await session.execute(
        select(ApiToken).order_by(ApiToken.created_at.desc()).limit(MAX_LISTED)
    )
    return list(rows.scalars())


@router.delete(
    "/api/tokens/{token_id}", response_model=TokenInfo, response_model_by_alias=True,
    responses={409: {"description": "last_admin_token: it would lock every admin out"}},
)  # fmt: skip
async def revoke_api_token(token_id: TokenId, caller: Caller, session: Session) -> ApiToken:
    """Revoke a token (admin): from now on it is 401 invalid_token. Revoking twice is a no-op."""
    caller.require_admin()
    row = await session.get(ApiToken, token_id)
    if row is None:
        raise NotFound(f"no API token {token_id!r}", code="unknown_token")
    if row.revoked_at is not None:
        return row
    if row.kind is TokenKind.ADMIN:
        admins = await session.scalar(
            select(func.count()).select_from(ApiToken).where(
                ApiToken.kind == TokenKind.ADMIN, ApiToken.revoked_at.is_(None)
            )
        )  # fmt: skip
        if admins == 1:
            raise Conflict(
                f"{token_id} is the last admin token: revoking it would lock every admin out. "
                "Create another admin token first (POST /api/tokens)",
                code="last_admin_token",
            )
    row.revoked_at = utcnow()
    return row
