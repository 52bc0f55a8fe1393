"""What every backend's test lab does at teardown, and the login every VM test runs.

- ``FAILED``: set (by ``tests/vmm/conftest.py``'s report hook) on a test and its
  module when the test fails, so a function- or module-scoped lab knows.
- ``teardown``: when a test failed, each console is copied into ``save_to``
  and its tail printed (a failure always comes with the boot it happened in);
  then every instance is destroyed and what any left behind is returned.
- ``login_every_provider``: a whole login per provider through an agent, against
  the test bed's OAuth server, and a check of the credential files it wrote.
"""

from __future__ import annotations

import json
import secrets
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from remotecli.errors import VmError
from remotecli.testbed import OAuthServer, login
from remotecli.vmm.agentclient import AgentClient
from remotecli.vmm.base import Backend, Deadlines, Instance, InstanceSpec, Phase
from remotecli.vmm.readiness import console_tail
from tests.support.user import PASSWORD, USER

FAILED = pytest.StashKey[bool]()
PROVIDERS = ("claude_code", "codex", "gemini_cli")


def failed(request: pytest.FixtureRequest) -> bool:
    """Whether the test (a function-scoped lab) or a test of the module (module-scoped) failed."""
    return bool(request.node.stash.get(FAILED, False))


async def teardown(instances: Sequence[Instance], *, failed: bool, save_to: Path) -> list[str]:
    """Save and print the consoles if the test failed; destroy all; what was left behind."""
    if failed:
        for instance in instances:
            saved = save_to / f"{instance.spec.instance_id}.console.log"
            if instance.console_path.exists():
                shutil.copy(instance.console_path, saved)
            print(f"\n--- console of {instance.spec.instance_id} (full: {saved}) ---")
            print(console_tail(instance.console_path, 3000, 40))
    problems = []
    for instance in instances:
        try:
            await instance.destroy()
        except VmError as exc:
            problems.append(exc.message)
    return problems


async def login_every_provider(
    agent: AgentClient, server: OAuthServer, *, wait_seconds: float = 30
) -> None:
    """Log each provider's CLI in through ``agent`` as the test bed's user (the browser at
    the URL the CLI printed), and check the credential files: complete, 0600, and Codex's
    access token one the server issued."""
    for provider in PROVIDERS:
        session = await agent.request(
            "POST", f"/auth/{provider}", json={"waitSeconds": wait_seconds}
        )
        assert session["phase"] == "awaiting_user", session
        assert session["oauthUrl"].startswith(server.url)  # the browser's address
        outcome = login(session["oauthUrl"], USER, PASSWORD)
        answer = (
            {"callbackUrl": outcome.redirect_url}
            if session["mode"] == "localhost_callback"
            else {"code": outcome.pasted}
        )
        done = await agent.request("POST", f"/sessions/{session['sessionId']}/code", json=answer)
        assert done["phase"] == "authenticated", done
        creds = await agent.request("GET", "/credentials", params={"provider": provider})
        assert creds["complete"] is True
        assert all(f["mode"] == "0600" for f in creds["files"])
    issued = {t.access_token for t in server.issued_tokens("codex")}
    creds = await agent.request("GET", "/credentials", params={"provider": "codex"})
    assert json.loads(creds["files"][0]["content"])["tokens"]["access_token"] in issued


#: Generous for a healthy boot (~0.4 s here) on a loaded CI host.
BOOT_DEADLINES = Deadlines(
    {
        Phase.VMM_STARTED: 10.0,
        Phase.KERNEL_BOOTED: 30.0,
        Phase.INIT_STARTED: 20.0,
        Phase.AGENT_LISTENING: 20.0,
        Phase.AGENT_READY: 10.0,
    }
)


#: For faulty variants: long enough for a healthy agent, short enough for the suite.
FAULT_DEADLINES = Deadlines({**BOOT_DEADLINES.per_phase, Phase.AGENT_LISTENING: 3.0})


@dataclass
class Lab:
    backend: Backend
    image: Path
    created: list[Instance] = field(default_factory=list)

    def spec(
        self,
        name: str,
        *,
        layers: Sequence[Path] = (),
        deadlines: Deadlines = BOOT_DEADLINES,
        agent_env: dict[str, str] | None = None,
    ) -> InstanceSpec:
        return InstanceSpec(
            image=self.image,
            instance_id=f"{name}-{secrets.token_hex(3)}",
            agent_token=secrets.token_urlsafe(24),
            layers=tuple(layers),
            deadlines=deadlines,
            agent_env=agent_env or {},
        )

    async def start(self, spec: InstanceSpec) -> Instance:
        instance = self.backend.create(spec)
        self.created.append(instance)
        await instance.start()
        return instance

    async def boot(
        self, name: str, *, layers: Sequence[Path] = (), agent_env: dict[str, str] | None = None
    ) -> Instance:
        instance = await self.start(self.spec(name, layers=layers, agent_env=agent_env))
        await instance.wait_ready()
        return instance
