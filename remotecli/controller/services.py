"""The controller's own services, in start order; ``api/app.py`` stops them in reverse.

Each is a pair of lifespan hooks taking the ``AppContext``; a service sets
its own field of the context (``vm_manager``, ``auth_flows``,
``prompt_service``). The order matters: the VM manager before the logins and
prompt runs that claim VMs, and on the way out the logins and runs end
(syncing credentials back) before the VMs go. Whoever assembles the app
(``remotecli/server/app.py``) may put its own hooks between them: the offline
demo's test bed starts before the VMs (its URL goes into every agent's
environment) and attaches to the VM manager right after it.
"""

from __future__ import annotations

from remotecli.controller.auth import flow as auth_flow
from remotecli.controller.context import Shutdown, Startup
from remotecli.controller.fleet import manager as vms
from remotecli.controller.prompts import service as prompts

Service = tuple[Startup, Shutdown | None]

VMS: Service = (vms.start_service, vms.stop_service)
LOGINS: Service = (auth_flow.start_service, auth_flow.stop_service)
PROMPTS: Service = (prompts.start_service, prompts.stop_service)

#: (start, stop) pairs in start order; a started service is stopped even if a later one fails.
SERVICES: list[Service] = [VMS, LOGINS, PROMPTS]
