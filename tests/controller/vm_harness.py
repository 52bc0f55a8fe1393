"""The controller with its VM manager, for the tests of ``controller/vms.py``.

``vm_controller(settings)`` runs the real controller (uvicorn in a thread,
the real database) with ``start_service``/``stop_service`` and the VM routes,
and hands the test the app's context and event loop, so a test can call the
manager the way the other services do (``ctl.call(ctl.manager.claim(...))``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from remotecli.controller.api.routes.vms import router
from remotecli.controller.context import AppContext
from remotecli.controller.db.models import VmRole
from remotecli.controller.fleet.manager import VmManager, start_service, stop_service
from remotecli.controller.settings import Settings
from remotecli.vmm.base import Backend, Deadlines, Phase
from tests.controller.harness import RunningController, run_controller
from tests.support.poll import eventually, eventually_async

T = TypeVar("T")

#: A healthy fake agent listens in ~0.1 s; a hung one is given up on after 2 s.
FAST = Deadlines(
    {
        Phase.VMM_STARTED: 10.0,
        Phase.KERNEL_BOOTED: 30.0,
        Phase.INIT_STARTED: 30.0,
        Phase.AGENT_LISTENING: 2.0,
        Phase.AGENT_READY: 10.0,
    }
)


@dataclass
class VmController:
    running: RunningController
    context: AppContext
    loop: asyncio.AbstractEventLoop

    @property
    def manager(self) -> VmManager:
        return self.context.vms()

    def api(self, token: str | None = "admin") -> httpx.Client:
        return self.running.client(token)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        """Run ``coro`` on the controller's event loop (where the manager lives)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def read(self, fn: Callable[[], T]) -> T:
        """Evaluate ``fn`` on the controller's loop (its dicts change only there)."""

        async def run() -> T:
            return fn()

        return self.call(run())

    def wait_for(self, what: str, check: Callable[[], T | None], timeout: float = 20.0) -> T:
        """Poll ``check`` (on the controller's loop) until it returns something truthy."""
        return eventually(what, lambda: self.read(check), timeout)

    def vm(self, vm_id: str) -> dict[str, Any]:
        response = self.api().get(f"/api/vms/{vm_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def pool(self, role: VmRole) -> list[str]:
        """The ids of the warm pool's READY VMs of ``role`` (read on the controller's loop)."""
        return self.read(lambda: list(self.manager._pool[role]))

    def create_user(self, user_id: str) -> None:
        response = self.api().post("/api/users", json={"id": user_id})
        assert response.status_code == 201, response.text


@contextlib.contextmanager
def vm_controller(
    settings: Settings,
    *,
    backend: Backend | None = None,
    image_rootfs: Path | None = None,
    deadlines: Deadlines | None = FAST,
    pool_backoff: tuple[float, float] = (1.0, 60.0),
) -> Iterator[VmController]:
    box: dict[str, Any] = {}

    async def capture(context: AppContext) -> None:
        box["context"], box["loop"] = context, asyncio.get_running_loop()

    start = partial(
        start_service, backend=backend, image_rootfs=image_rootfs, deadlines=deadlines,
        pool_backoff=pool_backoff,
    )  # fmt: skip
    with run_controller(
        settings, startup=[capture, start], shutdown=[stop_service], routers=[router]
    ) as running:
        yield VmController(running, box["context"], box["loop"])


# -- fixtures (each test module binds them: ``state_dir = vm_harness.state_dir``) ----------


async def _reap_all(root: Path) -> list[str]:
    """Reap whatever a test left under ``root``; return what was there."""
    from remotecli.vmm.fake.backend import FakeBackend
    from remotecli.vmm.nspawn.backend import NspawnBackend

    left: list[str] = []
    for name, make in (("fake", FakeBackend), ("nspawn", NspawnBackend)):
        backend = make(root / name)
        for instance_id in await backend.list_running():
            left.append(f"{name}/{instance_id}")
            await backend.reap(instance_id)
    return left


@pytest.fixture
def state_dir() -> Iterator[Path]:
    """A short state dir (agent sockets must fit 108 bytes); no instance may be left in it."""
    root = Path(tempfile.mkdtemp(prefix="rcli-c-"))
    yield root
    left = asyncio.run(_reap_all(root))
    shutil.rmtree(root, ignore_errors=True)
    assert left == [], f"instances left behind (now reaped): {left}"


@pytest.fixture
def make_settings(database_url: str, state_dir: Path) -> Callable[..., Settings]:
    """Settings for a VM test: fake backend, no pool, a fast health monitor; override any."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = dict(
            environment="test", state_dir=state_dir, database_url=database_url, backend="fake",
            warm_pool_auth=0, warm_pool_cli=0, health_interval_seconds=0.2,
            health_failures_allowed=2,
        )  # fmt: skip
        values.update(overrides)
        return Settings(**values)

    return make


# -- a controller that crashes (in a child process) ------------------------------------------

CHILD_SETTINGS = "RCLI_TEST_CONTROLLER_SETTINGS"
REPO = Path(__file__).resolve().parents[2]
Plan = Callable[[AppContext], Coroutine[Any, Any, dict[str, Any]]]


def crash_controller(settings: Settings, plan: str, timeout: float = 90.0) -> dict[str, Any]:
    """Run a controller in a child process, carry out ``plan`` there, then ``os._exit``.

    What a crash (OOM kill, power cut of the controller alone) leaves: VMs
    running, rows saying what they were doing. Returns the plan's JSON.
    """
    code = "import sys; from tests.controller.vm_harness import child_main; child_main(sys.argv[1])"
    done = subprocess.run(
        [sys.executable, "-c", code, plan], cwd=REPO, capture_output=True, text=True,
        timeout=timeout, env={**os.environ, CHILD_SETTINGS: settings.model_dump_json()},
    )  # fmt: skip
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise AssertionError(
            f"the crashing controller failed (exit {done.returncode}):\n{done.stderr[-4000:]}"
        )
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def child_main(plan: str) -> None:
    settings = Settings.model_validate_json(os.environ[CHILD_SETTINGS])
    asyncio.run(_child(settings, PLANS[plan]))


async def _child(settings: Settings, plan: Plan) -> None:
    from remotecli.server.app import create_app

    start = partial(start_service, deadlines=FAST if settings.backend == "fake" else None)
    app = create_app(settings, startup=[start])
    async with app.router.lifespan_context(app):
        result = await plan(app.state.context)
        print(json.dumps(result), flush=True)
        os._exit(0)  # no shutdown hooks, no cleanup: a crash


async def _until(check: Callable[[], object], timeout: float = 30.0) -> None:
    await eventually_async("the plan's condition", check, timeout)


async def _add_user(context: AppContext, user_id: str) -> None:
    from remotecli.controller.db import engine as db
    from remotecli.controller.db.models import User

    async with db.session_scope(context.sessions) as session:
        session.add(User(id=user_id))


async def _plan_mixed(context: AppContext) -> dict[str, Any]:
    """A CLI VM, two auth VMs, a warm one, one mid-start and a stray instance."""
    from remotecli.vmm.base import InstanceSpec
    from remotecli.vmm.fake.backend import FakeBackend, FakeFault

    manager = context.vms()
    assert isinstance(manager.backend, FakeBackend)
    await _add_user(context, "alice")
    kept = await manager.cli_vm("alice")
    vanishing = await manager.claim(VmRole.AUTH)
    dying = await manager.claim(VmRole.AUTH)
    await _until(lambda: manager._pool[VmRole.AUTH])
    manager.backend.fail_next(FakeFault.NEVER_LISTENS)  # stays STARTING until the crash
    # CLI: no pool for that role, so this one boots (the auth pool would serve it at once)
    starting = asyncio.get_running_loop().create_task(manager.claim(VmRole.CLI))
    await _until(lambda: manager._launching)
    stray = FakeBackend(manager.backend.state_root).create(
        InstanceSpec(image=Path("/"), instance_id="stray-1", agent_token="x" * 32)
    )
    await stray.start()
    await stray.wait_ready()
    assert not starting.done()
    return {
        "kept": kept.vm_id, "vanishing": vanishing.vm_id, "dying": dying.vm_id,
        "dyingPid": getattr(dying.instance, "pid", None), "pooled": manager._pool[VmRole.AUTH][0],
        "starting": next(iter(manager._launching)), "strayPid": stray.pid,
    }  # fmt: skip


async def _plan_nspawn(context: AppContext) -> dict[str, Any]:
    """An auth VM from the pool, alice's CLI VM cold: their claim latencies."""
    manager = context.vms()
    await _add_user(context, "alice")
    await _until(lambda: manager._pool[VmRole.AUTH])
    warm = await manager.claim(VmRole.AUTH)
    cold = await manager.cli_vm("alice")
    return {"warm": warm.vm_id, "cold": cold.vm_id}


PLANS: dict[str, Plan] = {"mixed": _plan_mixed, "nspawn": _plan_nspawn}
