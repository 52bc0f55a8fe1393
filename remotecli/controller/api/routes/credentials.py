"""A user's stored credentials: what is connected, and disconnecting. Never the secrets."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from remotecli.controller.api.deps import Caller, Session
from remotecli.controller.apimodel import UserId
from remotecli.controller.auth.schemas import CredentialOut, CredentialsDeleted
from remotecli.controller.db.models import User, utcnow
from remotecli.controller.errors import BadRequest, NotFound
from remotecli.controller.vault import credentials
from remotecli.providers import PROVIDERS

router = APIRouter(tags=["credentials"])

ProviderPath = Annotated[str, Path(max_length=64, examples=["claude_code"])]


@router.get("/api/users/{user_id}/credentials", response_model=list[CredentialOut])
async def list_credentials(
    user_id: UserId, caller: Caller, session: Session
) -> list[CredentialOut]:
    """One entry per connected provider: state (connected / expired / needs_login) and expiry."""
    caller.require_user(user_id)
    if await session.get(User, user_id) is None:
        raise NotFound(f"no user {user_id!r}", code="unknown_user")
    now = utcnow()
    return [
        CredentialOut(
            provider=record.provider,
            state=credentials.effective_state(record, now).value,
            kind=record.kind.value,
            version=record.version,
            expires_at=record.expires_at,
            updated_at=record.created_at,
        )
        for record in await credentials.list_for_user(session, user_id)
    ]


@router.delete("/api/users/{user_id}/credentials/{provider}", response_model=CredentialsDeleted)
async def disconnect(
    user_id: UserId, provider: ProviderPath, caller: Caller, session: Session
) -> CredentialsDeleted:
    """Disconnect a provider: every stored version of its credentials is deleted."""
    caller.require_user(user_id)
    if provider not in PROVIDERS:
        raise BadRequest(
            f"unknown provider {provider!r}; choose one of: {', '.join(sorted(PROVIDERS))}",
            code="unknown_provider",
        )
    deleted = await credentials.delete(session, user_id, provider)
    if deleted == 0:
        raise NotFound(f"no {provider} credentials stored for {user_id!r}", code="no_credentials")
    return CredentialsDeleted(provider=provider, deleted_versions=deleted)
