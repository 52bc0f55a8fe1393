"""The dashboard's sign-in: an API token exchanged for an HttpOnly cookie holding it.

``POST /api/session {"token"}`` checks the token and sets the cookie;
``DELETE /api/session`` clears it; ``GET /api/session`` says who the cookie
(or bearer header) is. The cookie is HttpOnly (page scripts never see the
token), SameSite=Strict (no other site's page sends it) and Secure on https.
Both changing calls need ``X-Remotecli-Csrf: 1`` like every cookie request
(security.py): no other site can sign a browser in or out.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import Field, SecretStr

from remotecli.controller.api.deps import Caller, Context, require_csrf_header
from remotecli.controller.apimodel import ApiModel
from remotecli.controller.auth.schemas import CamelOut
from remotecli.controller.security import SESSION_COOKIE, Principal, authenticate_token

router = APIRouter(tags=["session"])

#: A signed-in browser stays signed in for a working day, not forever.
COOKIE_SECONDS = 12 * 3600


class SessionCreate(ApiModel):
    token: SecretStr = Field(max_length=200, description="An API token (service, user or admin)")


class SessionOut(CamelOut):
    kind: str = Field(examples=["user"])
    user_id: str | None = None


def _out(principal: Principal) -> SessionOut:
    return SessionOut(kind=principal.kind.value, user_id=principal.user_id)


@router.post(
    "/api/session",
    response_model=SessionOut,
    responses={401: {"description": "invalid_token"}, 403: {"description": "csrf_required"}},
)
async def sign_in(
    body: SessionCreate, request: Request, response: Response, context: Context
) -> SessionOut:
    """Check the token, then keep it in the browser's HttpOnly cookie."""
    require_csrf_header(request)
    token = body.token.get_secret_value().strip()
    async with context.sessions() as session:
        principal = await authenticate_token(session, token)
        await session.commit()
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=COOKIE_SECONDS,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return _out(principal)


@router.get("/api/session", response_model=SessionOut)
async def whoami(caller: Caller) -> SessionOut:
    return _out(caller)


@router.delete("/api/session", status_code=204, responses={403: {"description": "csrf_required"}})
async def sign_out(request: Request) -> Response:
    require_csrf_header(request)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response
