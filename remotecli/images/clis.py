"""The coding CLIs in the image: the real ones from npm, or the test bed's fakes.

Real CLIs are installed by the *host's* npm into ``CLI_PREFIX`` inside the
rootfs (the image has node but no npm, which would add ~50 packages), with
lifecycle scripts and optional dependencies on: Claude's postinstall copies
its native binary into place from an optional platform package. They run
on the image's own node (trixie's nodejs 20), so each is verified with
``chroot ROOT <cli> --version`` before the image is sealed.

Every entry point is linked into ``CLI_BIN`` with a *relative* symlink, so
the link resolves the same from the host (under rootfs/) and in the guest.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from remotecli import proc
from remotecli.errors import ImageError
from remotecli.images import layout
from remotecli.images.chroot import run_in_root
from remotecli.images.recipe import CliSpec
from remotecli.images.store import guest, sha256_file

#: The fakes: executable → guest path of the script in the package copy.
FAKE_CLIS: Mapping[str, str] = {
    name: f"{layout.PACKAGE_ROOT}/remotecli/testbed/bin/{name}"
    for name in ("claude", "codex", "gemini")
}
#: npm settings a builder's environment must not override: without scripts or
#: optional deps Claude's binary is a stub that prints "not installed".
_NPM_OVERRIDES = (
    "npm_config_ignore_scripts", "npm_config_omit", "npm_config_only", "npm_config_production",
    "npm_config_optional", "npm_config_engine_strict", "npm_config_prefix", "npm_config_global",
)  # fmt: skip
#: HOME for the verification runs: CLIs may write config on any run, and
#: that must not land in the image's /root.
_VERIFY_HOME = "/tmp/remotecli-verify"  # noqa: S108 (inside the image being built)


@dataclass(frozen=True)
class InstalledCli:
    executable: str
    #: Guest path of the link on PATH, and of the file it resolves to.
    path: str
    target: str
    sha256: str
    #: First line of ``--version``, run inside the image.
    version: str
    package: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path, "target": self.target, "sha256": self.sha256,
            "version": self.version, "package": self.package,
        }  # fmt: skip


async def install_real(
    rootfs: Path, specs: Iterable[CliSpec], on_line: Callable[[str], None]
) -> None:
    """``npm install --prefix <rootfs>/CLI_PREFIX`` the pinned packages, linked onto PATH."""
    specs = list(specs)
    npm = shutil.which("npm")
    if npm is None:
        raise ImageError(
            "npm is not installed on this host; the real CLIs are installed with it: "
            "apt-get install nodejs npm (make up / make test install them)"
        )
    prefix = guest(rootfs, layout.CLI_PREFIX)
    prefix.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k.lower() not in _NPM_OVERRIDES}
    env.update(npm_config_update_notifier="false", npm_config_fund="false")
    argv = [
        npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", "--no-save",
        "--ignore-scripts=false", "--include=optional", "--engine-strict=false",
        # Tarballs already in npm's cache are used without asking the registry.
        "--prefer-offline", "--loglevel=warn", *(s.npm_spec for s in specs),
    ]  # fmt: skip
    await proc.run(
        argv, timeout=1800, env=env, cwd=prefix, on_line=on_line,
        hint="Check access to the npm registry (npm ping) and the pinned versions "
        "in remotecli/providers/.",
    )  # fmt: skip
    link_clis(rootfs, {s.executable: f"{layout.CLI_PREFIX}/node_modules/.bin/{s.executable}"
                       for s in specs})  # fmt: skip


def link_clis(rootfs: Path, targets: Mapping[str, str]) -> None:
    """``CLI_BIN/<name>`` → the guest path ``targets[name]``, as relative symlinks."""
    bin_dir = guest(rootfs, layout.CLI_BIN)
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, target in targets.items():
        link = bin_dir / name
        link.unlink(missing_ok=True)
        link.symlink_to(os.path.relpath(target, layout.CLI_BIN))


async def verify(
    rootfs: Path, executables: Iterable[str], packages: Mapping[str, str] | None = None
) -> dict[str, InstalledCli]:
    """Run each ``CLI_BIN/<name> --version`` in the image; hash what the link resolves to."""
    home = guest(rootfs, _VERIFY_HOME)
    home.mkdir(mode=0o700)
    try:
        found = {}
        for name in executables:
            link = f"{layout.CLI_BIN}/{name}"
            done = await run_in_root(
                rootfs, [link, "--version"], env={"HOME": _VERIFY_HOME}, timeout=120,
                hint=f"{name} is installed but does not run on the image's node/libc.",
            )  # fmt: skip
            lines = [line.strip() for line in done.stdout.splitlines() if line.strip()]
            if not lines or "not installed" in lines[0]:
                raise ImageError(
                    f"`{link} --version` in the image printed {done.stdout.strip()!r}: the "
                    "package is incomplete (did its postinstall script and optional "
                    "dependencies install?)"
                )
            target = resolve_in_root(rootfs, link)
            digest = await asyncio.to_thread(sha256_file, guest(rootfs, target))
            found[name] = InstalledCli(
                name, link, target, digest, lines[0], (packages or {}).get(name)
            )
        return found
    finally:
        shutil.rmtree(home, ignore_errors=True)


def resolve_in_root(rootfs: Path, path: str, max_hops: int = 40) -> str:
    """Follow symlinks as the guest would (absolute targets are inside the image)."""
    parts = [p for p in path.split("/") if p]
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == ".":
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        host = guest(rootfs, "/".join([*resolved, part]))
        if host.is_symlink():
            hops += 1
            if hops > max_hops:
                raise ImageError(f"too many symlinks resolving {path} in {rootfs}")
            target = os.readlink(host)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p] + parts
            continue
        resolved.append(part)
    return "/" + "/".join(resolved)
