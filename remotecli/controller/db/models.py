"""The controller's tables (SQLAlchemy 2, typed). The DB is the source of truth.

Schema changes go through Alembic (``controller/migrations``); the app never
calls ``create_all``. Secrets are never stored in the clear: credential
files and VM tokens are AES-GCM ciphertext with the id of the key that
sealed them (``vault.py``); API tokens are stored as SHA-256 hashes.
Request/response schemas live in ``controller/api/schemas.py``, not here.
"""

from __future__ import annotations

import enum
import secrets
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

from sqlalchemy import (
    JSON,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    event,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, Mapper, mapped_column
from sqlalchemy.types import TypeDecorator

# The state enums live in their wings, each beside its transition table.
from remotecli.controller.auth.states import AuthPhase
from remotecli.controller.fleet.states import VmRole, VmState
from remotecli.controller.prompts.states import RunStatus
from remotecli.controller.vault.states import CredentialKind, CredentialState

__all__ = [
    "ApiToken", "AuthPhase", "AuthSession", "Base", "Credential", "CredentialKind",
    "CredentialState", "Lease", "PromptRun", "RunStatus", "StrEnumColumn", "TokenKind", "User",
    "Vm", "VmRole", "VmState", "new_id", "utcnow",
]  # fmt: skip


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: JSON,
        datetime: DateTime(timezone=True),
    }


class TokenKind(enum.StrEnum):
    SERVICE = "service"  # the web product's backend: may act for any user
    USER = "user"  # one user, for itself only
    ADMIN = "admin"  # VM operations, user and token management


E = TypeVar("E", bound=enum.StrEnum)


class StrEnumColumn(TypeDecorator[E]):
    """A ``VARCHAR(length)`` column holding a ``StrEnum``: exactly the member's string is
    stored (so the migrations' ``String`` columns stay as they are) and a member comes
    back; a string that is no member is refused on the way in and out (``ValueError``)."""

    impl = String
    cache_ok = True

    def __init__(self, enum_type: type[E], length: int) -> None:
        super().__init__(length)
        self.enum_type = enum_type

    def process_bind_param(self, value: E | str | None, dialect: Dialect) -> str | None:
        return None if value is None else self.enum_type(value).value

    def process_result_value(self, value: str | None, dialect: Dialect) -> E | None:
        return None if value is None else self.enum_type(value)


def _members_on_set(mapper: Mapper[Any], cls: type[Any]) -> None:
    """A string set on an enum column (``Vm(state="ready")``) becomes its member at once, so
    an object not yet loaded from the database compares with ``is`` like one that was."""
    for attr in mapper.column_attrs:
        column_type = attr.columns[0].type
        if isinstance(column_type, StrEnumColumn):
            enum_type = column_type.enum_type

            def coerce(target: object, value: Any, old: object, initiator: object,
                       enum_type: type[enum.StrEnum] = enum_type) -> Any:  # fmt: skip
                return None if value is None else enum_type(value)

            event.listen(getattr(cls, attr.key), "set", coerce, retval=True)


event.listen(Base, "mapper_configured", _members_on_set, propagate=True)


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("tok"))
    #: sha256 of the token; the token itself is shown once, at creation.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    #: The first characters of the token, so a human can tell tokens apart.
    prefix: Mapped[str] = mapped_column(String(16))
    kind: Mapped[TokenKind] = mapped_column(StrEnumColumn(TokenKind, 16))
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class Credential(Base):
    """One version of a user's credential files for one provider, encrypted."""

    __tablename__ = "credentials"
    __table_args__ = (UniqueConstraint("user_id", "provider", "version"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("cred"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    provider: Mapped[str] = mapped_column(String(32))
    version: Mapped[int] = mapped_column(Integer)
    kind: Mapped[CredentialKind] = mapped_column(StrEnumColumn(CredentialKind, 16))
    key_id: Mapped[str] = mapped_column(String(32))
    nonce: Mapped[bytes] = mapped_column(LargeBinary)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    #: The agent's content version of the files (sha256), to spot changes on sync-back.
    content_version: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[CredentialState] = mapped_column(
        StrEnumColumn(CredentialState, 16), default=CredentialState.CONNECTED
    )
    expires_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Vm(Base):
    __tablename__ = "vms"
    __table_args__ = (Index("ix_vms_role_state", "role", "state"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("vm"))
    backend: Mapped[str] = mapped_column(String(32))
    role: Mapped[VmRole] = mapped_column(StrEnumColumn(VmRole, 16))
    state: Mapped[VmState] = mapped_column(StrEnumColumn(VmState, 16), default=VmState.STARTING)
    #: The owner of a CLI VM; None for auth VMs and the warm pool.
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    #: How it came to be: "pool", "restore" or "cold".
    origin: Mapped[str] = mapped_column(String(16), default="cold")
    #: The VM's agent token, encrypted like credentials (needed to adopt after a restart).
    token_key_id: Mapped[str] = mapped_column(String(32))
    token_nonce: Mapped[bytes] = mapped_column(LargeBinary)
    token_ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    #: Readiness: seconds to each phase reached, and skipped phases with reasons.
    phases: Mapped[dict[str, Any]] = mapped_column(default=dict)
    #: The structured error (NotReady.to_dict() or similar) when it failed.
    error: Mapped[dict[str, Any] | None]
    health_failures: Mapped[int] = mapped_column(Integer, default=0)
    last_health_at: Mapped[datetime | None]
    stop_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    ready_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
    stopped_at: Mapped[datetime | None]
    # -- added by migration 0002 (the VM manager) --
    #: The backend's id for the instance (state dir, machine name); derived from ``id``.
    instance_id: Mapped[str | None] = mapped_column(String(64))
    #: Seconds of each step of its life: ``startSeconds``, ``claimSeconds``, ``destroySeconds``.
    timings: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default=text("'{}'"))
    #: How the claim was served: each source tried (pool, restore, cold) and what happened.
    claim_trace: Mapped[dict[str, Any] | None]
    #: The last console lines, saved when the instance was destroyed (its files go with it).
    console_tail: Mapped[str | None] = mapped_column(Text)
    #: Why the last health check failed (None once it passes again).
    health_error: Mapped[str | None] = mapped_column(Text)


class AuthSession(Base):
    __tablename__ = "auth_sessions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("auth"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    provider: Mapped[str] = mapped_column(String(32))
    mode: Mapped[str] = mapped_column(String(32))
    phase: Mapped[AuthPhase] = mapped_column(
        StrEnumColumn(AuthPhase, 32), default=AuthPhase.CLAIMING_VM
    )
    vm_id: Mapped[str | None] = mapped_column(ForeignKey("vms.id", ondelete="SET NULL"))
    agent_session_id: Mapped[str | None] = mapped_column(String(64))
    login_url: Mapped[str | None] = mapped_column(Text)
    user_code: Mapped[str | None] = mapped_column(String(64))
    instructions: Mapped[str | None] = mapped_column(Text)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    #: Structured evidence for failures (e.g. the VM's NotReady as JSON).
    error_detail: Mapped[dict[str, Any] | None]
    timings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    expires_at: Mapped[datetime]


class Lease(Base):
    """At most one VM holds a live copy of a user's provider credentials."""

    __tablename__ = "leases"

    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    provider: Mapped[str] = mapped_column(String(32), primary_key=True)
    vm_id: Mapped[str] = mapped_column(ForeignKey("vms.id", ondelete="CASCADE"))
    credential_version: Mapped[int] = mapped_column(Integer)
    content_version: Mapped[str | None] = mapped_column(String(64))
    acquired_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: The prompt run using the copy right now (None: the VM holds it, idle).
    run_id: Mapped[str | None] = mapped_column(String(32))
    #: When a crashed controller's claim lapses: the run's deadline plus a grace.
    busy_until: Mapped[datetime | None]


class PromptRun(Base):
    __tablename__ = "prompt_runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("run"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    provider: Mapped[str] = mapped_column(String(32))
    vm_id: Mapped[str | None] = mapped_column(ForeignKey("vms.id", ondelete="SET NULL"))
    #: Several runs started together by POST /api/perspectives share a group.
    group_id: Mapped[str | None] = mapped_column(String(32), index=True)
    status: Mapped[RunStatus] = mapped_column(
        StrEnumColumn(RunStatus, 16), default=RunStatus.RUNNING
    )
    exit_code: Mapped[int | None] = mapped_column(Integer)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    usage: Mapped[dict[str, Any] | None]
    cost_usd: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
