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
from typing import Any, ClassVar

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
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


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


class CredentialState(enum.StrEnum):
    CONNECTED = "connected"
    EXPIRED = "expired"  # the access token's expiry passed; a refresh may still work
    NEEDS_LOGIN = "needs_login"  # the refresh failed: the user must log in again


class AuthPhase(enum.StrEnum):
    CLAIMING_VM = "claiming_vm"
    STARTING_LOGIN = "starting_login"
    AWAITING_USER = "awaiting_user"
    VERIFYING = "verifying"
    CAPTURING = "capturing"
    AUTHENTICATED = "authenticated"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @property
    def ended(self) -> bool:
        return self in (self.AUTHENTICATED, self.FAILED, self.CANCELLED, self.EXPIRED)


class VmRole(enum.StrEnum):
    AUTH = "auth"  # one login, then destroyed
    CLI = "cli"  # a user's CLI VM: holds credentials, runs prompts


class VmState(enum.StrEnum):
    STARTING = "starting"
    READY = "ready"  # in the warm pool, unclaimed
    CLAIMED = "claimed"  # serving a login or a user
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


class RunStatus(enum.StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


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
    kind: Mapped[str] = mapped_column(String(16))
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
    #: "oauth" (files captured from a login) or "api_key".
    kind: Mapped[str] = mapped_column(String(16))
    key_id: Mapped[str] = mapped_column(String(32))
    nonce: Mapped[bytes] = mapped_column(LargeBinary)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    #: The agent's content version of the files (sha256), to spot changes on sync-back.
    content_version: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default=CredentialState.CONNECTED)
    expires_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Vm(Base):
    __tablename__ = "vms"
    __table_args__ = (Index("ix_vms_role_state", "role", "state"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("vm"))
    backend: Mapped[str] = mapped_column(String(32))
    role: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16), default=VmState.STARTING)
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
    phase: Mapped[str] = mapped_column(String(32), default=AuthPhase.CLAIMING_VM)
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
    status: Mapped[str] = mapped_column(String(16), default=RunStatus.RUNNING)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    usage: Mapped[dict[str, Any] | None]
    cost_usd: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
