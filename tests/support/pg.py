"""A throwaway PostgreSQL cluster for the test session (Debian's packages, no service needed)."""

from __future__ import annotations

import contextlib
import glob
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path


def pg_bin() -> Path | None:
    """The newest installed PostgreSQL's bin directory (Debian: /usr/lib/postgresql/N/bin)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4])
    )
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _as_postgres(argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    # initdb and postgres refuse to run as root: Debian's package made this user.
    return subprocess.run(
        ["runuser", "-u", "postgres", "--", *argv],
        capture_output=True, text=True, timeout=timeout, check=True,
    )  # fmt: skip


@contextlib.contextmanager
def throwaway_cluster() -> Iterator[str]:
    """Start a cluster on 127.0.0.1:<free port>; yield a base URL without a database name."""
    bindir = pg_bin()
    if bindir is None:
        raise RuntimeError(
            "PostgreSQL is not installed: `make test` installs it (apt-get install postgresql)"
        )
    root = Path(tempfile.mkdtemp(prefix="rcli-pg-"))
    shutil.chown(root, "postgres", "postgres")
    data, sock_dir = root / "data", root / "sock"
    sock_dir.mkdir()
    shutil.chown(sock_dir, "postgres", "postgres")
    password = secrets.token_hex(12)
    pwfile = root / "pw"
    pwfile.write_text(password)
    shutil.chown(pwfile, "postgres", "postgres")
    port = _free_port()
    try:
        initdb = [str(bindir / "initdb"), "-D", str(data), "-U", "remotecli", "-E", "UTF8"]
        _as_postgres([*initdb, "--auth=scram-sha-256", f"--pwfile={pwfile}", "--no-sync"])
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {sock_dir} -c fsync=off"
        _as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-w", "-t", "60",
                      "-l", str(root / "log"), "start"])  # fmt: skip
        try:
            yield f"postgresql+psycopg://remotecli:{password}@127.0.0.1:{port}"
        finally:
            _as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"])
    finally:
        shutil.rmtree(root, ignore_errors=True)


def create_database(base_url: str) -> str:
    """A fresh empty database on the cluster; returns its URL."""
    import psycopg

    name = f"t_{secrets.token_hex(6)}"
    plain = base_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(f"{plain}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{base_url}/{name}"
