"""The services the controller runs, in start order; ``app.py`` stops them in reverse.

Each is a pair of lifespan hooks taking the ``AppContext``; a service puts
itself into ``context.services``. The order matters: the demo's test bed must
exist before the first VM boots (its URL goes into every agent's environment),
the VM manager before the logins and prompt runs that claim VMs, and on the
way out the logins and runs end (syncing credentials back) before the VMs go.
"""

from __future__ import annotations

from remotecli.controller import auth_flow, demo, prompts, vms
from remotecli.controller.context import Shutdown, Startup

#: (start, stop) pairs in start order; a started service is stopped even if a later one fails.
SERVICES: list[tuple[Startup, Shutdown | None]] = [
    (demo.start_service, demo.stop_service),
    (vms.start_service, vms.stop_service),
    (demo.attach_service, None),
    (auth_flow.start_service, auth_flow.stop_service),
    (prompts.start_service, prompts.stop_service),
]
