"""``GET /diagnostics``: the seed's checklist, answered from inside the VM.

The seed's team needed SSH to learn whether systemd was PID 1, whether the
agent unit was enabled and active, and why. The agent can tell: this module
gathers those facts (stdlib only) so ``remotecli image validate`` works the
same on every backend, VM or container.
"""

from __future__ import annotations

import asyncio
import os
import platform
import pwd
import shutil
import stat
from pathlib import Path
from typing import Any

from remotecli.agent.config import AgentConfig
from remotecli.agent.process import RunAs, stop_group
from remotecli.agent.wire import AgentUnit, CliInfo, CredentialDir, Diagnostics
from remotecli.providers import PROVIDERS

COMMAND_TIMEOUT = 20.0  # gemini --version alone takes ~1.3 s; a cold VM is slower


async def collect(config: AgentConfig) -> Diagnostics:
    unit = own_unit()
    system_state, failed, unit_props, clis = await asyncio.gather(
        # --wait: a system still booting says "starting"; wait for its verdict.
        _output(["systemctl", "is-system-running", "--wait"]),
        _output(["systemctl", "list-units", "--failed", "--plain", "--no-legend", "--no-pager"]),
        _unit_properties(unit),
        asyncio.gather(*(_cli_version(config, name) for name in PROVIDERS)),
    )
    return Diagnostics(
        pid1=_read("/proc/1/comm"),
        python=platform.python_version(),
        system_state=system_state["stdout"].strip() or None,
        failed_units=[line.split()[0] for line in failed["stdout"].splitlines() if line.split()],
        agent_unit=unit_props,
        clis=list(clis),
        credential_dirs=[_credential_dir(config, d) for d in _credential_dirs()],
    )


def own_unit() -> str | None:
    """The systemd unit this process runs in, from its cgroup path (None outside systemd)."""
    text = _read("/proc/self/cgroup") or ""
    for line in text.splitlines():
        path = line.rsplit(":", 1)[-1]
        for part in reversed(path.split("/")):
            if part.endswith(".service"):
                return part
    return None


async def _unit_properties(unit: str | None) -> AgentUnit | None:
    if unit is None:
        return None
    props = "Id,ActiveState,SubState,UnitFileState,ExecMainStatus,NRestarts,After"
    result = await _output(["systemctl", "show", unit, f"--property={props}", "--no-pager"])
    fields = dict(line.split("=", 1) for line in result["stdout"].splitlines() if "=" in line)
    return AgentUnit(
        name=unit,
        active_state=fields.get("ActiveState"),
        sub_state=fields.get("SubState"),
        unit_file_state=fields.get("UnitFileState"),
        restarts=fields.get("NRestarts"),
        waits_for_network_online="network-online.target" in fields.get("After", ""),
    )


async def _cli_version(config: AgentConfig, provider_name: str) -> CliInfo:
    provider = PROVIDERS[provider_name]
    path = shutil.which(provider.executable, path=config.path)
    if path is None:
        return CliInfo(provider.name, provider.executable, None, False, None, None)
    env = config.child_env({})
    result = await _output([path, "--version"], env=env, run_as=config.run_as)
    version = result["stdout"].strip().splitlines()[0] if result["stdout"].strip() else None
    error = None
    if result["exitCode"] != 0 or version is None:
        error = f"`{provider.executable} --version` exited {result['exitCode']}: " + (
            result["stderr"].strip()[-300:] or "no output"
        )
    return CliInfo(provider.name, provider.executable, path, True, version, error)


def _credential_dirs() -> list[str]:
    dirs = {str(Path(f.path).parent) for p in PROVIDERS.values() for f in p.credential_files}
    return sorted(d for d in dirs if d != ".")


def _credential_dir(config: AgentConfig, relative: str) -> CredentialDir:
    path = config.home / relative
    if not path.is_dir():
        return CredentialDir(str(path), exists=False, ok=False, problem="missing")
    st = path.stat()
    owner = _user_name(st.st_uid)
    mode = stat.S_IMODE(st.st_mode)
    expected_uid = config.run_as.uid if config.run_as else os.geteuid()
    problems = []
    if st.st_uid != expected_uid:
        problems.append(f"owned by {owner}, expected {config.user_name}")
    if mode & 0o077:
        problems.append(f"mode {mode:04o} lets others in; expected 0700")
    return CredentialDir(
        str(path), exists=True, owner=owner, mode=f"{mode:04o}", ok=not problems,
        problem="; ".join(problems) or None,
    )  # fmt: skip


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


async def _output(
    argv: list[str], *, env: dict[str, str] | None = None, run_as: RunAs | None = None
) -> dict[str, Any]:
    ids: dict[str, Any] = {}
    if run_as is not None and os.geteuid() == 0:
        ids = {"user": run_as.uid, "group": run_as.gid, "extra_groups": []}
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,
            **ids,
        )
    except OSError as exc:
        return {"exitCode": None, "stdout": "", "stderr": f"{argv[0]}: {exc.strerror}"}
    try:
        out, err = await asyncio.wait_for(proc.communicate(), COMMAND_TIMEOUT)
    except TimeoutError:
        await stop_group(proc)
        return {"exitCode": None, "stdout": "", "stderr": f"timed out after {COMMAND_TIMEOUT} s"}
    return {"exitCode": proc.returncode, "stdout": out.decode(errors="replace"),
            "stderr": err.decode(errors="replace")}  # fmt: skip
