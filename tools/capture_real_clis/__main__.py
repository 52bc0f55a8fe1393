"""Run the scenarios: ``python3 -m tools.capture_real_clis [NAME ...]`` (root, repo root)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

from tests.support.realcli_install import install_real_clis
from tools.capture_real_clis.capture import Ctx
from tools.capture_real_clis.claude import (
    scenario_claude_basic,
    scenario_claude_local_listener,
    scenario_claude_login,
    scenario_claude_login_inputs,
    scenario_claude_tls_success,
)
from tools.capture_real_clis.codex import (
    scenario_codex_api_key,
    scenario_codex_basic,
    scenario_codex_exec_long,
    scenario_codex_exec_stdin,
    scenario_codex_login,
    scenario_codex_login_extra,
)
from tools.capture_real_clis.codex_success import (
    scenario_codex_fake_issuer,
    scenario_codex_tls_success,
)
from tools.capture_real_clis.common import REPO, SCRATCH
from tools.capture_real_clis.gemini import (
    scenario_gemini_basic,
    scenario_gemini_login,
    scenario_gemini_long,
    scenario_gemini_sigterm,
    scenario_gemini_tls_success,
    scenario_gemini_trust_prompt,
)
from tools.capture_real_clis.sandbox import enter_sandbox, listening_ports

SCENARIOS: dict[str, Callable[[Ctx], None]] = {
    "codex_basic": scenario_codex_basic,
    "codex_login": scenario_codex_login,
    "codex_login_extra": scenario_codex_login_extra,
    "codex_exec_long": scenario_codex_exec_long,
    "codex_api_key": scenario_codex_api_key,
    "codex_exec_stdin": scenario_codex_exec_stdin,
    "codex_fake_issuer": scenario_codex_fake_issuer,
    "codex_tls": scenario_codex_tls_success,
    "claude_basic": scenario_claude_basic,
    "claude_auth": scenario_claude_login,
    "claude_listener": scenario_claude_local_listener,
    "claude_inputs": scenario_claude_login_inputs,
    "claude_tls": scenario_claude_tls_success,
    "gemini_basic": scenario_gemini_basic,
    "gemini_login": scenario_gemini_login,
    "gemini_trust": scenario_gemini_trust_prompt,
    "gemini_sigterm": scenario_gemini_sigterm,
    "gemini_long": scenario_gemini_long,
    "gemini_tls": scenario_gemini_tls_success,
}


def main(argv: list[str]) -> int:
    if os.environ.get("REMOTECLI_CAPTURE_INSIDE") != "1":
        if os.geteuid() != 0:
            sys.exit("run as root (needs unshare --net --mount)")
        bins = install_real_clis()
        SCRATCH.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, REMOTECLI_CAPTURE_INSIDE="1")
        cmd = ["unshare", "--net", "--mount", "--fork", sys.executable, "-m", __package__, *argv]
        del bins
        return subprocess.run(cmd, env=env, cwd=REPO, check=False).returncode
    enter_sandbox()
    ctx = Ctx(install_real_clis())
    names = argv or list(SCENARIOS)
    for name in names:
        print(f"== {name}", flush=True)
        SCENARIOS[name](ctx)
    leftover = listening_ports()
    print(f"listening at the end: {leftover}")
    return 0 if not {1455, 1457} & set(leftover) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
