"""What every API schema shares, whichever wing declares it: the base model, user ids, providers
and timestamps that always carry their zone. The wings' own request/response bodies
(``auth/schemas.py``, ``api/schemas.py``, the routers) build on these."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints

#: The web product's user ids: opaque, but no whitespace or path separators.
UserId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")]
ProviderName = Literal["claude_code", "codex", "gemini_cli"]


def _as_utc(stamp: datetime) -> datetime:
    # SQLite hands datetimes back naive (they were stored as UTC): without the zone the
    # answer is not the RFC 3339 date-time the schema declares, and a client reads local time.
    return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp


#: A timestamp in an answer: always with its zone.
UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]


class ApiModel(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")
