"""The agent's settings, from its command line and environment.

    python3 -m remotecli.agent --token-file /etc/remotecli/agent.token \\
        --unix /run/agent/agent.sock --home /home/cli --run-as cli

The VM token guards every endpoint but ``/health``. It is read once at start
from ``--token-file`` or ``REMOTECLI_AGENT_TOKEN``; the agent refuses to start
without one, since an open agent would hand out the user's credentials.
"""

from __future__ import annotations

import argparse
import os
import pwd
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from remotecli.agent.process import RunAs
from remotecli.providers import PROVIDERS

DEFAULT_PORT = 8080
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
# Variables a CLI may legitimately need from the agent's own environment.
DEFAULT_PASS_ENV = (
    "REMOTECLI_TESTBED_URL",  # the offline test bed's OAuth server (fake CLIs only)
    "REMOTECLI_TESTBED_API_URL",  # where the fake CLIs call it from a VM (a forward)
    "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "https_proxy", "http_proxy", "no_proxy",
    "SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS", "GOOGLE_CLOUD_PROJECT",
)  # fmt: skip
# Every variable that can carry a credential and override the files.
SCRUBBED = frozenset(name for p in PROVIDERS.values() for name in p.scrub_env)


class ConfigError(Exception):
    """The agent cannot start with these settings; the message says how to fix it."""


@dataclass(frozen=True)
class AgentConfig:
    token: str
    home: Path
    workspace: Path
    run_as: RunAs | None = None
    user_name: str = "root"
    tcp_host: str = "0.0.0.0"  # noqa: S104 - the seed's contract: the host reaches TCP 8080
    tcp_port: int | None = DEFAULT_PORT
    vsock_port: int | None = DEFAULT_PORT
    unix_socket: Path | None = None
    #: Where the token came from; POST /identity writes a new one there.
    token_file: Path | None = None
    #: POST /identity may set the hostname and clock and credit entropy (VMs only).
    machine_identity: bool = False
    path: str = DEFAULT_PATH
    pass_env: tuple[str, ...] = DEFAULT_PASS_ENV
    environ: Mapping[str, str] = field(default_factory=dict)
    max_body: int = 1024 * 1024
    #: Upper bound on any login's deadline (the provider's own may be shorter).
    login_deadline_cap: float = 900.0
    #: Default and maximum run time of a prompt.
    run_timeout: float = 600.0
    max_run_timeout: float = 3600.0

    def child_env(
        self,
        extra: Mapping[str, str],
        *,
        term: str = "dumb",
        api_key: tuple[str, str] | None = None,
    ) -> dict[str, str]:
        """A clean environment for a CLI: never the agent's own, never a stray credential."""
        env = {
            "PATH": self.path,
            "HOME": str(self.home),
            "USER": self.user_name,
            "LOGNAME": self.user_name,
            "LANG": "C.UTF-8",
            "TERM": term,
            "CODEX_HOME": str(self.home / ".codex"),
        }
        env.update({k: self.environ[k] for k in self.pass_env if k in self.environ})
        env.update(extra)
        for name in SCRUBBED:
            env.pop(name, None)
        if api_key is not None:
            env[api_key[0]] = api_key[1]
        return env


def parse_args(argv: Sequence[str], environ: Mapping[str, str]) -> AgentConfig:
    parser = argparse.ArgumentParser(
        prog="python3 -m remotecli.agent",
        description="remote-cli agent: runs inside each VM, drives the coding CLIs.",
    )
    parser.add_argument("--token-file", type=Path, help="file holding the VM token")
    parser.add_argument(
        "--tcp",
        default=f"0.0.0.0:{DEFAULT_PORT}",
        help="HOST:PORT to listen on, or 'off' (default %(default)s)",
    )
    parser.add_argument(
        "--vsock",
        default=str(DEFAULT_PORT),
        help="AF_VSOCK port, or 'off' (default %(default)s; skipped without vsock)",
    )
    parser.add_argument("--unix", type=Path, help="also listen on this Unix socket")
    parser.add_argument(
        "--machine-identity",
        action="store_true",
        help="let POST /identity set this machine's hostname and clock (VM backends pass it)",
    )
    parser.add_argument(
        "--home", type=Path, help="HOME of the CLIs (default: --run-as's home, else $HOME)"
    )
    parser.add_argument(
        "--workspace", type=Path, help="working directory of prompt runs (default HOME/workspace)"
    )
    parser.add_argument("--run-as", help="run the CLIs as this user (the agent needs root for it)")
    parser.add_argument(
        "--cli-path",
        action="append",
        default=[],
        help="directory searched first for the CLIs (repeatable)",
    )
    parser.add_argument(
        "--login-deadline",
        type=float,
        default=900.0,
        help="upper bound in seconds on any login (each CLI has its own, often shorter)",
    )
    args = parser.parse_args(list(argv))
    if args.login_deadline <= 0:
        raise ConfigError("--login-deadline must be a positive number of seconds")

    token = _read_token(args.token_file, environ)
    run_as: RunAs | None = None
    user_name = environ.get("USER", "root")
    home = args.home
    if args.run_as:
        try:
            entry = pwd.getpwnam(args.run_as)
        except KeyError:
            raise ConfigError(f"--run-as: no user named {args.run_as!r} in this image") from None
        run_as = RunAs(entry.pw_uid, entry.pw_gid)
        user_name = entry.pw_name
        home = home or Path(entry.pw_dir)
    home = (home or Path(environ.get("HOME", "/root"))).resolve()
    workspace = (args.workspace or home / "workspace").resolve()
    for directory in (home, workspace):
        directory.mkdir(parents=True, exist_ok=True)
        if run_as is not None and os.geteuid() == 0:
            os.chown(directory, run_as.uid, run_as.gid)
    path = ":".join([*(str(Path(p).resolve()) for p in args.cli_path), DEFAULT_PATH])
    return AgentConfig(
        token=token,
        home=home,
        workspace=workspace,
        run_as=run_as,
        user_name=user_name,
        tcp_host=_host_port(args.tcp)[0] if args.tcp != "off" else "",
        tcp_port=_host_port(args.tcp)[1] if args.tcp != "off" else None,
        vsock_port=None if args.vsock == "off" else _port(args.vsock, "--vsock"),
        unix_socket=args.unix,
        token_file=args.token_file,
        machine_identity=args.machine_identity,
        path=path,
        environ=dict(environ),
        login_deadline_cap=args.login_deadline,
    )


def _read_token(path: Path | None, environ: Mapping[str, str]) -> str:
    if path is not None:
        try:
            token = path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the token file {path}: {exc.strerror}") from exc
    else:
        token = environ.get("REMOTECLI_AGENT_TOKEN", "").strip()
    if len(token) < 16:
        raise ConfigError(
            "the agent needs a VM token of at least 16 characters: pass --token-file FILE "
            "or set REMOTECLI_AGENT_TOKEN (every endpoint but /health requires it)"
        )
    return token


def _host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep:
        raise ConfigError(f"--tcp must be HOST:PORT or 'off', not {value!r}")
    return host or "0.0.0.0", _port(port, "--tcp")  # noqa: S104


def _port(value: str, flag: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise ConfigError(f"{flag}: {value!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"{flag}: {port} is out of range")
    return port
