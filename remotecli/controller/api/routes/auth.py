"""The login flow: ``/api/auth/start`` (the seed's request) and ``/api/auth/sessions/{id}``.

Thin: ``auth_flow.AuthFlows`` does the work (its docstring says who may see what).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from fastapi.responses import StreamingResponse

from remotecli.controller.api.deps import Caller, Context
from remotecli.controller.auth.flow import AuthFlows
from remotecli.controller.auth.schemas import AuthSessionOut, AuthStart, CodeSubmit

router = APIRouter(tags=["auth"])

SessionId = Annotated[str, Path(max_length=64, examples=["auth_3f9c0a1b2c3d4e5f"])]


def get_flows(context: Context) -> AuthFlows:
    return context.auth()  # 503 auth_unavailable when it is not running


Flows = Annotated[AuthFlows, Depends(get_flows)]

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Bad input: unknown_provider, unsupported_login_mode, ..."},
    401: {"description": "No or invalid API token"},
    403: {"description": "The token may not act for this user"},
    404: {"description": "No such session (or not yours)"},
}


@router.post(
    "/api/auth/start",
    status_code=201,
    response_model=AuthSessionOut,
    responses={
        **_ERRORS,
        503: {
            "description": "The auth VM never got ready (vm_not_ready, with "
            "the readiness evidence and the sessionId)"
        },
    },
)
async def start_login(body: AuthStart, caller: Caller, flows: Flows) -> AuthSessionOut:
    """Start a login: claims an auth VM, starts the CLI's login, answers with the login URL.

    In API-key mode (`"mode": "api_key", "apiKey": ...`) the key is stored and the
    session is authenticated at once, without a VM.
    """
    return await flows.start(caller, body)


@router.get("/api/auth/sessions/{session_id}", response_model=AuthSessionOut, responses=_ERRORS)
async def get_login(session_id: SessionId, caller: Caller, flows: Flows) -> AuthSessionOut:
    return await flows.get(caller, session_id)


@router.get(
    "/api/auth/sessions/{session_id}/events",
    response_class=StreamingResponse,
    responses={
        **_ERRORS,
        200: {
            "content": {"text/event-stream": {}},
            "description": "`event: session` + the session as JSON on every change; "
            "a comment every 15 s; ends when the session ends",
        },
    },
)
async def follow_login(session_id: SessionId, caller: Caller, flows: Flows) -> StreamingResponse:
    stream = await flows.events(caller, session_id)
    return StreamingResponse(
        stream,
        media_type="text/event-stream",
        # no-cache: a proxy must not replay an old state; nginx must not buffer events.
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.post(
    "/api/auth/sessions/{session_id}/code",
    response_model=AuthSessionOut,
    responses={
        **_ERRORS,
        409: {"description": "session_ended, login_not_ready, ..."},
        502: {"description": "The login VM did not answer"},
    },
)
async def submit_code(
    session_id: SessionId, body: CodeSubmit, caller: Caller, flows: Flows
) -> AuthSessionOut:
    """Relay what the user pasted: `code` (Claude, Gemini) or `callbackUrl` (Codex).

    The agent's verdict on a wrong answer comes back with its own code
    (`state_mismatch`, `callback_host_not_allowed`, `invalid_code`, ...).
    """
    return await flows.submit(caller, session_id, body)


@router.delete(
    "/api/auth/sessions/{session_id}",
    response_model=AuthSessionOut,
    responses={**_ERRORS, 409: {"description": "The login already ended otherwise"}},
)
async def cancel_login(session_id: SessionId, caller: Caller, flows: Flows) -> AuthSessionOut:
    """Cancel a login: the CLI is stopped and the auth VM destroyed."""
    return await flows.cancel(caller, session_id)
