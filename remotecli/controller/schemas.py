"""Request and response bodies of the API (separate from the table models)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

#: The web product's user ids: opaque, but no whitespace or path separators.
UserId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")]
ProviderName = Literal["claude_code", "codex", "gemini_cli"]


class ApiModel(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")


class UserCreate(ApiModel):
    id: UserId = Field(examples=["5abacdd1-6a9b-48ce-b723-ca8056324c7a"])
    name: str | None = Field(default=None, max_length=200)


class UserOut(ApiModel):
    id: str
    name: str | None
    created_at: datetime = Field(serialization_alias="createdAt")


class TokenCreate(ApiModel):
    kind: Literal["service", "user", "admin"]
    user_id: UserId | None = Field(default=None, alias="userId")
    name: str = Field(default="", max_length=200)


class TokenOut(ApiModel):
    id: str
    kind: str
    user_id: str | None = Field(serialization_alias="userId")
    prefix: str
    name: str
    #: Present only in the response that created it: store it now.
    token: str | None = Field(default=None, examples=["rcli_user_…"])
