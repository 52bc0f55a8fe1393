"""Bearer API tokens and who may do what.

- ``service``: the web product's backend; may act for any ``userId``.
- ``user``: one user, only for itself.
- ``admin``: VM operations, users and tokens.

Tokens look like ``rcli_<kind>_<random>``; only their SHA-256 is stored.

Browsers (the dashboard) hold the token in an HttpOnly cookie instead of a
header (``POST /api/session``). Such a request with an unsafe method must
also carry ``X-Remotecli-Csrf: 1``: another site can make a browser send the
cookie, never a custom header (that needs a CORS preflight we do not answer).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from remotecli.controller.db.models import ApiToken, TokenKind, utcnow
from remotecli.controller.errors import Forbidden, Unauthorized


@dataclass(frozen=True)
class Principal:
    token_id: str
    kind: TokenKind
    user_id: str | None

    def can_act_for(self, user_id: str) -> bool:
        if self.kind in (TokenKind.SERVICE, TokenKind.ADMIN):
            return True
        return self.user_id == user_id

    def require_user(self, user_id: str) -> None:
        if not self.can_act_for(user_id):
            # Same answer whether or not the user exists: ids are not an oracle.
            raise Forbidden("this token may only act for its own user", code="forbidden_user")

    def require_admin(self) -> None:
        if self.kind is not TokenKind.ADMIN:
            raise Forbidden("this needs an admin token", code="admin_required")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(kind: TokenKind) -> str:
    return f"rcli_{kind.value}_{secrets.token_urlsafe(32)}"


async def create_token(
    session: AsyncSession, kind: TokenKind, *, user_id: str | None = None, name: str = ""
) -> tuple[ApiToken, str]:
    """Store a new token; return the row and the token (shown once, never stored)."""
    if kind is TokenKind.USER and user_id is None:
        raise ValueError("a user token needs a user")
    token = new_token(kind)
    row = ApiToken(
        token_hash=hash_token(token), prefix=token[:16], kind=kind, user_id=user_id, name=name
    )
    session.add(row)
    await session.flush()
    return row, token


#: The dashboard's cookie holding the API token (HttpOnly, SameSite=Strict).
SESSION_COOKIE = "remotecli_session"
#: The header a cookie-authenticated unsafe request must carry, with the value "1".
CSRF_HEADER = "X-Remotecli-Csrf"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def authenticate(session: AsyncSession, header: str | None) -> Principal:
    if not header:
        raise Unauthorized("send 'Authorization: Bearer <API token>'", code="token_required")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("send 'Authorization: Bearer <API token>'", code="token_required")
    return await authenticate_token(session, token)


async def authenticate_token(session: AsyncSession, token: str) -> Principal:
    """The principal of a bare token (the bearer header's or the dashboard cookie's)."""
    row = (
        await session.execute(
            select(ApiToken).where(ApiToken.token_hash == hash_token(token.strip()))
        )
    ).scalar_one_or_none()
    if row is None or row.revoked_at is not None:
        raise Unauthorized("this API token is not valid (unknown or revoked)", code="invalid_token")
    row.last_used_at = utcnow()
    return Principal(token_id=row.id, kind=row.kind, user_id=row.user_id)
