"""The platform as ``remotecli up`` runs it: the controller's API, the dashboard, and in demo or
test mode the test bed as the providers.

``create_app(settings)`` is the controller's ``create_app`` plus:

- the dashboard's pages (``web.routes``), served with the API (they call it like any client);
- a first hook that gives the fake backend the test bed's fake CLIs in demo/test mode
  (``context.wiring.fake_cli_dir``; otherwise it runs whatever CLIs are on PATH);
- the offline demo (``REMOTECLI_DEMO=1``, ``demo.py``) around the VM service: its test bed
  starts before the first VM boots and serves inside every new container after it.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from remotecli.controller import services
from remotecli.controller.api.app import create_app as create_controller_app
from remotecli.controller.context import AppContext, Shutdown, Startup
from remotecli.controller.fleet.runtime import demo_or_test
from remotecli.controller.settings import Settings
from remotecli.server import demo
from remotecli.testbed import fake_cli_bin_dir
from remotecli.web import routes as web


async def wire_fake_clis(context: AppContext) -> None:
    """Before every other service: in demo/test mode the fake backend runs the test bed's CLIs."""
    if demo_or_test(context.settings):
        context.wiring.fake_cli_dir = fake_cli_bin_dir()


#: The platform's services in start order (``api/app.py`` stops them in reverse).
SERVICES: list[services.Service] = [
    (wire_fake_clis, None),
    (demo.start_service, demo.stop_service),
    services.VMS,
    (demo.attach_service, None),
    services.LOGINS,
    services.PROMPTS,
]


def create_app(
    settings: Settings,
    *,
    startup: list[Startup] | None = None,
    shutdown: list[Shutdown] | None = None,
    routers: list[APIRouter] | None = None,
) -> FastAPI:
    """The platform's app; ``startup``/``shutdown`` replace its services (tests pick their own,
    after ``wire_fake_clis``)."""
    return create_controller_app(
        settings,
        startup=None if startup is None else [wire_fake_clis, *startup],
        shutdown=shutdown,
        routers=[web.router, *(routers or [])],
        services=SERVICES,
    )
