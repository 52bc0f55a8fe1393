"""All of the controller's settings, in one class, from ``REMOTECLI_*`` environment variables.

Defaults are for development on one machine: SQLite under the state
directory, a vault key file created on first start, the best backend this
host can run. ``environment = "production"`` refuses the defaults that are
only safe on a developer's machine: ``UnsafeSettings`` (a ``RemoteCliError``,
in the tree drawn in ``remotecli/errors.py``), which pydantic reports as a
``ValidationError``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from remotecli.errors import RemoteCliError


# Also a ValueError: pydantic turns only a ValueError (or an AssertionError) raised in a
# validator into its ValidationError; any other exception would escape the settings
# unwrapped, and callers (tests/controller/test_settings.py) expect the ValidationError.
class UnsafeSettings(RemoteCliError, ValueError):
    """A development-only default was used outside development."""

    code = "unsafe_settings"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="REMOTECLI_", extra="ignore")

    environment: Literal["development", "production", "test"] = "development"
    host: str = "127.0.0.1"
    port: int = 4000
    state_dir: Path = Path(".run")
    #: SQLAlchemy URL. Default: SQLite in the state dir. PostgreSQL:
    #: ``postgresql+psycopg://user:pass@host/db``.
    database_url: str | None = None
    #: How long start-up waits for the database to answer (PostgreSQL may be starting too).
    database_wait_seconds: float = 30.0
    #: Base64 of a 32-byte key, or several as ``id:key,id:key`` (first seals).
    vault_keys: str | None = Field(default=None, repr=False)
    #: Used when ``vault_keys`` is unset: created with mode 0600 on first start.
    vault_key_file: Path | None = None
    #: "auto" picks the best backend this host runs (see ``remotecli doctor``).
    backend: Literal["auto", "firecracker", "qemu", "nspawn", "fake"] = "auto"
    #: The golden image directory; default: build/reuse the test-CLI image in
    #: demo mode, else the newest built image.
    image: Path | None = None
    #: OFFLINE DEMO: the test bed's OAuth server and fake CLIs stand in for the providers.
    demo: bool = False
    #: Run Firecracker under its jailer (chroot, unprivileged uid, cgroup limits).
    #: Default: on in production, off elsewhere.
    firecracker_jailer: bool | None = None
    #: Restore VMs from a golden snapshot where the backend can (qemu, firecracker).
    snapshots: bool = True
    warm_pool_auth: int = 1
    warm_pool_cli: int = 0
    cli_vm_idle_seconds: float = 900.0
    auth_session_seconds: float = 900.0
    health_interval_seconds: float = 10.0
    #: Consecutive failed health checks before a VM is replaced.
    health_failures_allowed: int = 3
    #: Created at first start if no admin token exists; printed once.
    bootstrap_admin: bool = True

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.state_dir / 'remotecli.db').resolve()}"

    @property
    def resolved_vault_key_file(self) -> Path:
        return self.vault_key_file or self.state_dir / "vault.key"

    @model_validator(mode="after")
    def _refuse_unsafe_defaults(self) -> Settings:
        if self.environment != "production":
            return self
        problems = []
        if self.demo:
            problems.append("REMOTECLI_DEMO=1 (fake providers) is for offline demos only")
        if self.vault_keys is None:
            problems.append(
                "set REMOTECLI_VAULT_KEYS from your secret store; a key file next to the "
                "database is a development default"
            )
        if not self.database_url or self.database_url.startswith("sqlite"):
            problems.append("set REMOTECLI_DATABASE_URL to PostgreSQL; SQLite is for one machine")
        if self.backend == "fake":
            problems.append("the fake backend runs no VM: users would not be isolated")
        if problems:
            raise UnsafeSettings("refusing to start in production: " + "; ".join(problems))
        return self
