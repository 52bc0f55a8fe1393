"""Request and response bodies of the API (separate from the table models)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from remotecli.controller.apimodel import ApiModel, UserId, UtcDatetime


class UserCreate(ApiModel):
    id: UserId = Field(examples=["5abacdd1-6a9b-48ce-b723-ca8056324c7a"])
    name: str | None = Field(default=None, max_length=200)


class UserOut(ApiModel):
    id: str
    name: str | None
    created_at: UtcDatetime = Field(serialization_alias="createdAt")


class TokenCreate(ApiModel):
    kind: Literal["service", "user", "admin"]
    user_id: UserId | None = Field(default=None, alias="userId")
    name: str = Field(default="", max_length=200)


class TokenInfo(ApiModel):
    """A token as listed: never the token itself (only its hash is stored)."""

    id: str
    kind: str
    user_id: str | None = Field(serialization_alias="userId")
    prefix: str
    name: str
    created_at: UtcDatetime = Field(serialization_alias="createdAt")
    last_used_at: UtcDatetime | None = Field(serialization_alias="lastUsedAt")
    revoked_at: UtcDatetime | None = Field(serialization_alias="revokedAt")


class TokenOut(ApiModel):
    id: str
    kind: str
    user_id: str | None = Field(serialization_alias="userId")
    prefix: str
    name: str
    #: Present only in the response that created it: store it now.
    token: str | None = Field(default=None, examples=["rcli_user_…"])
