"""Install the pinned real coding CLIs (Claude Code, Codex, Gemini) for tests.

Standard library only. The packages are installed once per set of pinned
versions into ``~/.cache/remotecli/real-clis/<hash>/`` and reused afterwards:

    from tests.support.realcli_install import install_real_clis, npm_registry_reachable

    if npm_registry_reachable():
        bins = install_real_clis()
        bins["codex"]  # Path to node_modules/.bin/codex

The install is atomic: npm runs in a temporary directory beside the final
one, which is renamed into place only after every executable answered
``--version``; a marker file records completion, so a second call returns at
once. A file lock serialises concurrent installers.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

PINNED_PACKAGES: tuple[str, ...] = (
    "@anthropic-ai/claude-code@2.1.332",
    "@openai/codex@0.171.0",
    "@google/gemini-cli@0.61.0",
)
"""npm specs installed together; changing one changes the cache directory."""

EXECUTABLES: tuple[str, ...] = ("claude", "codex", "gemini")
MARKER_NAME = ".remotecli-install-complete.json"
_STDERR_TAIL = 2000


def pinned_hash(packages: Sequence[str] = PINNED_PACKAGES) -> str:
    """Short, stable hash of the pinned package specs (the cache key)."""
    digest = hashlib.sha256("\n".join(sorted(packages)).encode()).hexdigest()
    return digest[:12]


def default_cache_root() -> Path:
    """``$XDG_CACHE_HOME/remotecli/real-clis`` (default ``~/.cache/...``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "remotecli" / "real-clis"


def _tail(data: bytes | str | None) -> str:
    if data is None:
        return ""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    return text[-_STDERR_TAIL:]


def _run(
    argv: Sequence[str],
    timeout: float,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run argv in its own process group; kill the whole group on timeout.

    Raises RuntimeError (argv, exit code, stderr tail) on failure or timeout.
    """
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    except OSError as exc:
        raise RuntimeError(f"cannot start {list(argv)!r}: {exc}") from exc
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _killpg(proc.pid)
        out, err = proc.communicate()
        raise RuntimeError(
            f"{list(argv)!r} timed out after {timeout:.0f}s "
            f"(exit code {proc.returncode}); stderr tail:\n{_tail(err)}"
        ) from None
    finally:
        # npm may leave grandchildren (postinstall scripts) in the group.
        _killpg(proc.pid)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{list(argv)!r} failed with exit code {proc.returncode}; stderr tail:\n{_tail(err)}"
        )
    return subprocess.CompletedProcess(list(argv), proc.returncode, out, err)


def _killpg(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _npm_env() -> dict[str, str]:
    """Environment for npm with lifecycle scripts and optional deps forced on."""
    env = dict(os.environ)
    for key in list(env):
        lowered = key.lower()
        if lowered in (
            "npm_config_ignore_scripts",
            "npm_config_omit",
            "npm_config_only",
            "npm_config_production",
            "npm_config_optional",
            "npm_config_engine_strict",
            "npm_config_prefix",
            "npm_config_global",
        ):
            del env[key]
    env["npm_config_ignore_scripts"] = "false"
    env["npm_config_update_notifier"] = "false"
    return env


def _bin_paths(prefix: Path) -> dict[str, Path]:
    return {name: prefix / "node_modules" / ".bin" / name for name in EXECUTABLES}


def _is_complete(prefix: Path, packages: Sequence[str]) -> bool:
    marker = prefix / MARKER_NAME
    try:
        data = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(data, dict) or data.get("packages") != list(packages):
        return False
    return all(p.exists() for p in _bin_paths(prefix).values())


def _verify(bins: Mapping[str, Path], timeout: float) -> dict[str, str]:
    """Run ``<cli> --version`` for each; return the first line of each.

    The CLIs write state under their home even for ``--version`` (codex creates
    ``$CODEX_HOME/tmp``, gemini ``~/.gemini/projects.json.*.tmp``), so they run
    with a throwaway HOME instead of the caller's.
    """
    versions: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="remotecli-verify-") as scratch:
        env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": scratch,
            "CODEX_HOME": str(Path(scratch) / ".codex"),
            "LANG": "C.UTF-8",
        }
        Path(env["CODEX_HOME"]).mkdir()
        for name, path in bins.items():
            versions[name] = _version_of(path, env, timeout)
    return versions


def _version_of(path: Path, env: Mapping[str, str], timeout: float) -> str:
    if not path.exists():
        raise RuntimeError(f"npm install did not create {path}")
    res = _run([str(path), "--version"], timeout=min(timeout, 120.0), env=env)
    text = res.stdout.decode("utf-8", "replace").strip()
    if "not installed" in text or not text:
        raise RuntimeError(
            f"{[str(path), '--version']!r} printed {text!r} (did the postinstall script run?)"
        )
    return text.splitlines()[0]


def install_real_clis(cache_root: Path | None = None, timeout: float = 600) -> dict[str, Path]:
    """Install the pinned CLIs (once) and return ``{"claude"|"codex"|"gemini": path}``.

    ``cache_root`` defaults to ``~/.cache/remotecli/real-clis``; packages go to
    ``cache_root/<pinned_hash()>``. ``timeout`` bounds the npm install (and
    each verification step). Raises RuntimeError when npm fails.
    """
    packages = PINNED_PACKAGES
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    final = root / pinned_hash(packages)
    if _is_complete(final, packages):
        return _bin_paths(final)

    root.mkdir(parents=True, exist_ok=True)
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm not found on PATH")
    with (root / ".install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _is_complete(final, packages):  # another process finished first
            return _bin_paths(final)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=root))
        tmp.chmod(0o755)  # mkdtemp makes it 0700; the CLIs may run as other users
        try:
            started = time.monotonic()
            argv = [
                npm,
                "install",
                "--prefix",
                str(tmp),
                "--no-audit",
                "--no-fund",
                "--ignore-scripts=false",
                "--include=optional",
                "--engine-strict=false",
                "--no-save",
                "--loglevel=warn",
                *packages,
            ]
            _run(argv, timeout=timeout, env=_npm_env(), cwd=tmp)
            versions = _verify(_bin_paths(tmp), timeout)
            marker = {
                "packages": list(packages),
                "versions": versions,
                "install_seconds": round(time.monotonic() - started, 1),
                "installed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            (tmp / MARKER_NAME).write_text(json.dumps(marker, indent=2) + "\n")
            if final.exists():  # stale, incomplete earlier attempt
                shutil.rmtree(final)
            tmp.rename(final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    bins = _bin_paths(final)
    _verify(bins, timeout)  # still works after the rename (relative links)
    return bins


def npm_registry_reachable(timeout: float = 5) -> bool:
    """True when ``npm view @openai/codex@0.171.0 version`` answers in time."""
    npm = shutil.which("npm")
    if npm is None:
        return False
    spec = next(p for p in PINNED_PACKAGES if p.startswith("@openai/codex@"))
    try:
        res = _run([npm, "view", spec, "version"], timeout=timeout, env=_npm_env())
    except RuntimeError:
        return False
    return spec.rsplit("@", 1)[1] in res.stdout.decode("utf-8", "replace")


if __name__ == "__main__":
    import sys

    if not npm_registry_reachable(timeout=30):
        sys.exit("npm registry not reachable")
    for cli, exe in install_real_clis().items():
        print(f"{cli}\t{exe}")
