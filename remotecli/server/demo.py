"""OFFLINE DEMO (``REMOTECLI_DEMO=1``): the test bed stands in for the providers.

The test bed's OAuth server runs in the controller process; every VM's agent
gets its URL (``REMOTECLI_TESTBED_URL``), and the image's fake CLIs sign in
against it. Containers have a private network, so for each new container the
server also answers inside that container's network namespace, at the very
same address. Never for real users: production settings refuse demo mode.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

from remotecli.controller.context import AppContext
from remotecli.testbed import TESTBED_API_URL_ENV, TESTBED_URL_ENV, OAuthServer
from remotecli.testbed.netns import listen_in_netns
from remotecli.vmm.base import Instance

log = logging.getLogger(__name__)
SERVICE = "demo"


class Demo:
    def __init__(self) -> None:
        self.server = OAuthServer().start()
        self._inside: list[tuple[int, Callable[[], None]]] = []

    async def serve_inside(self, instance: Instance) -> None:
        pid_of = getattr(instance, "container_pid", None)
        pid = pid_of() if callable(pid_of) else None
        if not isinstance(pid, int):
            return  # not a container: the host's loopback is the VM's (fake backend)
        self._prune()
        port = int(self.server.url.rsplit(":", 1)[1])
        sock = await asyncio.to_thread(listen_in_netns, f"/proc/{pid}/ns/net", port)
        self._inside.append((pid, self.server.serve_on(sock)))

    def _prune(self) -> None:
        """Stop serving into namespaces whose container is gone."""
        alive = []
        for pid, close in self._inside:
            if os.path.exists(f"/proc/{pid}"):
                alive.append((pid, close))
            else:
                close()
        self._inside = alive

    def stop(self) -> None:
        for _, close in self._inside:
            close()
        self.server.stop()


async def start_service(context: AppContext) -> None:
    """Before the VM service: start the test bed and hand its URL to every agent."""
    if not context.settings.demo:
        return
    demo = Demo()
    context.addons[SERVICE] = demo
    context.wiring.agent_env[TESTBED_URL_ENV] = demo.server.url
    # The fake CLIs' own requests (token exchange, device polling, the model
    # API): a VM reaches the test bed through its backend's guest forward.
    port = int(demo.server.url.rsplit(":", 1)[1])
    context.wiring.guest_services[TESTBED_API_URL_ENV] = port
    log.warning("OFFLINE DEMO: the providers are the test bed at %s", demo.server.url)


async def attach_service(context: AppContext) -> None:
    """After the VM service: make the test bed reachable inside every new container."""
    demo = context.addons.get(SERVICE)
    if isinstance(demo, Demo):
        manager = context.vms()
        manager.add_after_ready(demo.serve_inside)
        for handle in manager.handles():  # warm VMs that got ready before the hook existed
            await demo.serve_inside(handle.instance)


async def stop_service(context: AppContext) -> None:
    demo = context.addons.pop(SERVICE, None)
    if isinstance(demo, Demo):
        demo.stop()
