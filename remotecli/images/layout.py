"""Where things live inside the golden image: the contract between builder, backends and agent.

The builder (``images/build.py``) puts files at these paths; every backend
hands the agent its per-instance files through ``RUN_DIR`` (a bind mount in
a container, a small config disk or vsock in a VM); the readiness code reads
the console markers below.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from remotecli.errors import VmError

#: The package copy inside the image: /opt/remotecli/remotecli/{agent,providers,...}
PACKAGE_ROOT = "/opt/remotecli"
#: The agent's systemd unit. Ordered After=network.target only: never
#: network-online.target, which a wait-online service can hold for minutes.
AGENT_UNIT = "remotecli-agent.service"
AGENT_UNIT_PATH = f"/etc/systemd/system/{AGENT_UNIT}"
#: Per-instance directory the backend provides (token, socket, extra env).
RUN_DIR = "/run/agent"
TOKEN_FILE = f"{RUN_DIR}/token"
AGENT_SOCKET = f"{RUN_DIR}/agent.sock"
#: Optional ``KEY=value`` lines the backend writes (e.g. REMOTECLI_AGENT_ARGS).
AGENT_ENV_FILE = f"{RUN_DIR}/agent.env"
AGENT_PORT = 8080

#: The unprivileged account the CLIs run as, and its home.
CLI_USER = "cli"
CLI_UID = 1000
CLI_HOME = "/home/cli"
#: Credential directories created at build time (owner CLI_USER, mode 0700).
CREDENTIAL_DIRS = (".claude", ".codex", ".gemini")

#: Where the real CLIs are installed (npm --prefix) and linked onto PATH.
CLI_PREFIX = "/opt/remotecli/clis"
CLI_BIN = "/usr/local/bin"

# -- console markers (what the readiness tracker looks for) --------------------

#: The kernel printed its banner (VM backends only).
KERNEL_MARKERS = ("Linux version ",)
#: systemd is running as PID 1.
INIT_MARKERS = ("running in system mode",)
#: The agent's own log line once every listener is bound.
AGENT_LISTENING_MARKER = '"event": "agent.listening"'


def env_file(env: Mapping[str, str]) -> str:
    """``KEY="value"`` lines as systemd's EnvironmentFile= parses them."""
    lines = []
    for key, value in env.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) or "\n" in value:
            raise VmError(f"agent_env: {key!r} is not a valid single-line environment variable")
        quoted = value.replace("\\", "\\\\").replace('"', '\\"')
        lines.append(f'{key}="{quoted}"\n')
    return "".join(lines)
