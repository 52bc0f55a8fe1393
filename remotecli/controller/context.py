"""What the running controller holds: made in the app's lifespan, reached through ``api/deps.py``.

Nothing here is created at import time: tests build as many apps as they
like, each with its own database and backend. Every service has its own
typed field, set by its start hook and cleared by its stop hook; a route or
service that needs one goes through its getter (``vms()``, ``auth()``,
``prompts()``), which answers 503 with the service's own code when it is not
running. The wings' classes are named here for the type checker only: the
context is the one place that knows all of them, and no wing imports another
through it at run time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from remotecli.controller.errors import Unavailable
from remotecli.controller.metrics import Metrics
from remotecli.controller.settings import Settings
from remotecli.controller.vault.cipher import Vault

if TYPE_CHECKING:
    from remotecli.controller.auth.flow import AuthFlows
    from remotecli.controller.fleet.manager import VmManager
    from remotecli.controller.prompts.service import PromptService

T = TypeVar("T")


@dataclass
class GuestWiring:
    """What every VM is given by whoever assembles the controller (the offline demo).

    Set before the VM service starts (the composition root's first hook);
    the controller itself never fills it.
    """

    #: ``ENV_NAME=VALUE`` passed to every agent (the test bed's URL for the browser).
    agent_env: dict[str, str] = field(default_factory=dict)
    #: ``{ENV_NAME: host_port}``: host loopback services every guest must reach; the
    #: backend turns each into the address its guests use (QEMU's guest forward).
    guest_services: dict[str, int] = field(default_factory=dict)
    #: The fake backend's CLIs (the test bed's fakes in demo/test mode); None: those on PATH.
    fake_cli_dir: Path | None = None


@dataclass
class AppContext:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    vault: Vault
    metrics: Metrics = field(default_factory=Metrics)
    wiring: GuestWiring = field(default_factory=GuestWiring)
    #: The services, each set while it runs (``services.py`` starts them in order).
    vm_manager: VmManager | None = None
    auth_flows: AuthFlows | None = None
    prompt_service: PromptService | None = None
    #: Services the composition root runs beside the controller's own (the offline
    #: demo), by name: the controller only lists them in ``/api/health``.
    addons: dict[str, object] = field(default_factory=dict)

    def vms(self) -> VmManager:
        return _required(
            self.vm_manager,
            "the VM service is not running on this controller (see its start-up log)",
            "vms_unavailable",
        )

    def auth(self) -> AuthFlows:
        return _required(
            self.auth_flows,
            "the login service is not running; check the controller's log",
            "auth_unavailable",
        )

    def prompts(self) -> PromptService:
        return _required(
            self.prompt_service,
            "the prompt service is not running on this controller (see its start-up log)",
            "prompts_unavailable",
        )

    def running(self) -> list[str]:
        """The names of the services running now (``GET /api/health``)."""
        names = {
            "vms": self.vm_manager,
            "auth": self.auth_flows,
            "prompts": self.prompt_service,
        }
        return sorted([n for n, s in names.items() if s is not None] + ["metrics", *self.addons])


def _required(service: T | None, message: str, code: str) -> T:
    """The service, or a 503 with its own code while it is not running."""
    if service is None:
        raise Unavailable(message, code=code)
    return service


#: A lifespan hook: starts or stops one service of the controller.
Startup = Callable[[AppContext], Awaitable[None]]
Shutdown = Callable[[AppContext], Awaitable[None]]
