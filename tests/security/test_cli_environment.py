"""B9: the CLIs get a clean environment from the real agent, whatever the agent's own holds.

The real agent process runs with every credential variable any provider
knows, plus variables nobody allow-listed, in its own environment. A probe
stands in for each CLI (first on the agent's ``--cli-path``): it writes the
environment it was started with to a file and exits. What the probe saw is
what a real CLI would see.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from remotecli.agent.config import SCRUBBED
from remotecli.providers import PROVIDERS
from tests.support.agent_harness import RunningAgent, run_agent
from tests.support.agent_helpers import run_prompt

#: Variables the agent itself holds that no CLI may see.
PLANTED = {name: f"planted-{name.lower()}" for name in sorted(SCRUBBED)} | {
    "AWS_SECRET_ACCESS_KEY": "planted-aws",
    "REMOTECLI_AGENT_TOKEN": "planted-agent-token",
    "REMOTECLI_VAULT_KEYS": "planted-vault",
    "DATABASE_URL": "postgresql://planted",
    "LD_PRELOAD": "/planted.so",
    "PYTHONPATH": "/planted",
}
#: Allow-listed variables the agent passes on unchanged.
PASSED = {"HTTPS_PROXY": "http://proxy.invalid:3128", "NO_PROXY": "localhost"}
BASE = {"PATH", "HOME", "USER", "LOGNAME", "LANG", "TERM", "CODEX_HOME"}

PROBE = """#!/usr/bin/env python3
import json, os, sys
path = {out!r} + "/" + os.path.basename(sys.argv[0]) + ".json"
with open(path, "w") as fh:
    json.dump(dict(os.environ), fh)
"""


@pytest.fixture
def probed(tmp_path: Path) -> Iterator[tuple[RunningAgent, Path]]:
    out = tmp_path / "seen"
    out.mkdir()
    bin_dir = tmp_path / "probe-bin"
    bin_dir.mkdir()
    for provider in PROVIDERS.values():
        script = bin_dir / provider.executable
        script.write_text(PROBE.format(out=str(out)))
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    with run_agent(tmp_path, cli_path=bin_dir, env={**PLANTED, **PASSED}) as agent:
        yield agent, out


def seen(out: Path, provider: str, events: list[dict[str, Any]]) -> dict[str, str]:
    path = out / f"{PROVIDERS[provider].executable}.json"
    assert path.exists(), f"the probe standing in for {provider} never ran; the run said {events}"
    env: dict[str, str] = json.loads(path.read_text())
    path.unlink()
    return env


def check_clean(env: dict[str, str], provider: str, key: tuple[str, str] | None) -> None:
    leaked = {k: v for k, v in env.items() if k in PLANTED and (k, v) != key}
    assert leaked == {}, f"{provider}'s CLI saw the agent's variables {sorted(leaked)}"
    assert set(env) >= BASE, f"{provider}'s CLI lacks {sorted(BASE - set(env))}"
    assert {k: env.get(k) for k in PASSED} == PASSED, f"allow-listed variables lost: {env}"
    home = env["HOME"]
    assert env["CODEX_HOME"] == f"{home}/.codex", env
    unexpected = set(env) - BASE - set(PASSED) - {key[0] if key else ""}
    assert unexpected == set(), (
        f"{provider}'s CLI got variables nobody allow-listed: {sorted(unexpected)}"
    )


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_an_api_key_run_sees_only_its_own_key_and_no_other_credential(
    probed: tuple[RunningAgent, Path], provider: str
) -> None:
    agent, out = probed
    key = (PROVIDERS[provider].api_key_env, "test-the-runs-own-key")
    events = run_prompt(agent, provider, "hi", apiKey=key[1])
    env = seen(out, provider, events)
    assert env.get(key[0]) == key[1], f"the run's own key did not reach {provider}: {events}"
    check_clean(env, provider, key)


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_a_run_with_credential_files_sees_no_credential_variable(
    probed: tuple[RunningAgent, Path], provider: str
) -> None:
    agent, out = probed
    files = [{"path": f.path, "content": "{}"} for f in PROVIDERS[provider].credential_files]
    written = agent.client().post("/credentials/write", json={"provider": provider, "files": files})
    assert written.status_code == 200, written.text
    events = run_prompt(agent, provider, "hi")
    env = seen(out, provider, events)
    check_clean(env, provider, None)
    assert os.environ.get("HOME") != env["HOME"] and sys.prefix not in env["PATH"], env
