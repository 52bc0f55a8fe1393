"""What goes into a golden image, and the keys that name it. Pure: no subprocess, no root.

Two caches, two keys:

- the **base** (``<cache>/bases/<key>/``): debootstrap + the runtime Debian
  packages. Slow (~45 s) and rarely changing, so its key covers only the
  release, the mirror and the package lists.
- the **image** (``<cache>/images/<key>/``): a copy of the base plus the user,
  the agent, the unit, the CLIs and the first-boot work. Its key covers
  everything that decides its content (see ``ImageInputs.to_json``), so a
  second build with the same inputs is a lookup and any change gives a new
  directory: a running instance never sees its lower layer change.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import remotecli
from remotecli.errors import ImageError
from remotecli.providers import PROVIDERS

DEFAULT_RELEASE = "trixie"
DEFAULT_MIRROR = "http://deb.debian.org/debian"

#: debootstrap --include. Without udev and kmod a VM boot hangs on
#: serial-getty@ttyS0 and ignores power-off (measured on the seed's images).
DEBOOTSTRAP_PACKAGES: tuple[str, ...] = (
    "systemd", "systemd-sysv", "udev", "kmod", "dbus", "python3", "iproute2",
)  # fmt: skip
#: Installed with apt into the base: the CLIs' runtime (trixie's nodejs is
#: 20.x) and the CA bundle their HTTPS clients need.
RUNTIME_PACKAGES: tuple[str, ...] = ("nodejs", "ca-certificates")
#: Bump when debian.py changes what a base contains: bases are not keyed by
#: the builder's source (rebuilding one costs ~45 s for every comment edit).
BASE_RECIPE = 1

PACKAGE_DIR = Path(remotecli.__file__).resolve().parent
#: The parts of the ``remotecli`` package the guest needs: the agent imports
#: only these (see docs/ARCHITECTURE.md), all stdlib-only.
AGENT_PARTS: tuple[str, ...] = ("__init__.py", "agent", "providers")
#: Added with --test-clis: the fake CLIs import the test bed package.
TESTBED_PARTS: tuple[str, ...] = ("testbed",)

_DEBIAN_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
_RELEASE_NAME = re.compile(r"^[a-z][a-z0-9-]*$")


@dataclass(frozen=True)
class CliSpec:
    """One real CLI to install from npm at its pinned version."""

    provider: str
    executable: str
    package: str
    version: str

    def to_json(self) -> dict[str, str]:
        return {
            "provider": self.provider,
            "executable": self.executable,
            "package": self.package,
            "version": self.version,
        }

    @property
    def npm_spec(self) -> str:
        return f"{self.package}@{self.version}"

    @classmethod
    def for_provider(cls, name: str) -> CliSpec:
        try:
            p = PROVIDERS[name]
        except KeyError:
            raise ImageError(
                f"unknown provider {name!r} in --providers; expected some of: "
                f"{', '.join(sorted(PROVIDERS))}"
            ) from None
        return cls(p.name, p.executable, p.npm_package, p.npm_version)


@dataclass(frozen=True)
class BuildOptions:
    """What to build. Equal options (and equal sources) give the same image."""

    release: str = DEFAULT_RELEASE
    mirror: str = DEFAULT_MIRROR
    #: Provider names whose real CLIs are installed from npm (pinned versions).
    providers: tuple[str, ...] = ()
    #: Install the test bed's fake CLIs instead of real ones.
    test_clis: bool = False
    #: More Debian packages, installed after the base (they do not invalidate it).
    extra_packages: tuple[str, ...] = ()
    #: Default: $REMOTECLI_CACHE_DIR, else /var/lib/remotecli.
    cache_dir: Path | None = None

    def __post_init__(self) -> None:
        if not _RELEASE_NAME.match(self.release):
            raise ImageError(f"release {self.release!r} is not a Debian codename (e.g. trixie)")
        if not self.mirror.startswith(("http://", "https://")):
            raise ImageError(f"mirror {self.mirror!r} must be an http(s) URL of a Debian archive")
        for name in self.extra_packages:
            if not _DEBIAN_NAME.match(name):
                raise ImageError(f"{name!r} is not a valid Debian package name")
        if self.providers and self.test_clis:
            raise ImageError(
                "choose either real CLIs (--providers) or the test bed's fakes (--test-clis): "
                "both install claude/codex/gemini on the same PATH"
            )
        if len(set(self.providers)) != len(self.providers):
            raise ImageError(f"--providers lists a provider twice: {', '.join(self.providers)}")

    @property
    def cli_specs(self) -> tuple[CliSpec, ...]:
        return tuple(CliSpec.for_provider(name) for name in sorted(self.providers))

    @property
    def package_parts(self) -> tuple[str, ...]:
        return AGENT_PARTS + (TESTBED_PARTS if self.test_clis else ())


@dataclass(frozen=True)
class BaseInputs:
    release: str
    mirror: str
    debootstrap_packages: tuple[str, ...] = DEBOOTSTRAP_PACKAGES
    apt_packages: tuple[str, ...] = RUNTIME_PACKAGES
    recipe: int = BASE_RECIPE

    def to_json(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe,
            "release": self.release,
            "mirror": self.mirror,
            "variant": "minbase",
            "debootstrap_packages": sorted(self.debootstrap_packages),
            "apt_packages": sorted(self.apt_packages),
        }

    def key(self) -> str:
        return digest_json(self.to_json())


@dataclass(frozen=True)
class ImageInputs:
    """Everything that decides an image's content; the key hashes exactly ``to_json()``."""

    base: BaseInputs
    extra_packages: tuple[str, ...]
    #: sha256 over the package files copied into the image (see ``hash_files``).
    agent_sha256: str
    clis: tuple[CliSpec, ...]
    test_clis: bool
    #: Fingerprint of the builder's own code: a changed recipe is a new image.
    builder: str
    remotecli_version: str = remotecli.__version__
    package_parts: tuple[str, ...] = field(default=AGENT_PARTS)

    def to_json(self) -> dict[str, Any]:
        return {
            "base": {"key": self.base.key(), **self.base.to_json()},
            "extra_packages": sorted(self.extra_packages),
            "agent_sha256": self.agent_sha256,
            "package_parts": list(self.package_parts),
            "clis": [c.to_json() for c in self.clis],
            "test_clis": self.test_clis,
            "builder": self.builder,
            "remotecli_version": self.remotecli_version,
        }

    def key(self) -> str:
        return digest_json(self.to_json())


def image_inputs(options: BuildOptions, package_dir: Path = PACKAGE_DIR) -> ImageInputs:
    """Read the sources (a few ms) and return the inputs ``options`` stand for."""
    parts = options.package_parts
    return ImageInputs(
        base=BaseInputs(options.release, options.mirror),
        extra_packages=tuple(sorted(set(options.extra_packages))),
        agent_sha256=hash_files(package_dir, package_files(package_dir, parts)),
        clis=options.cli_specs,
        test_clis=options.test_clis,
        builder=builder_fingerprint(),
        package_parts=parts,
    )


def digest_json(data: Any) -> str:
    """The key of some inputs: 16 hex digits (64 bits) of sha256 over canonical JSON.

    Short because it names directories and instances; 64 bits are plenty to
    tell apart the few images one host ever builds.
    """
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


#: Modules of this package that do not shape an image's content (a module
#: missing here only costs a needless rebuild; one wrongly listed, stale images).
_NOT_RECIPE = frozenset({"report.py", "prune.py", "checklist.py"})


def builder_fingerprint() -> str:
    """sha256 of the builder's sources: editing the recipe must not reuse old images.

    Automatic rather than a version number someone must remember to bump; the
    price is a rebuild (~2 s from a cached base) after any edit to images/.
    """
    here = Path(__file__).resolve().parent
    return hash_files(here, sorted(p.name for p in here.glob("*.py") if p.name not in _NOT_RECIPE))[
        :16
    ]


def package_files(package_dir: Path, parts: Sequence[str]) -> list[str]:
    """The files (relative to ``package_dir``) that ``parts`` name, without bytecode."""
    files: list[str] = []
    for part in parts:
        src = package_dir / part
        if src.is_file():
            files.append(part)
            continue
        if not src.is_dir():
            raise ImageError(f"{src} is missing: the image needs it (is the checkout complete?)")
        for dirpath, dirnames, filenames in os.walk(src):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            rel = Path(dirpath).relative_to(package_dir)
            files.extend(str(rel / f) for f in sorted(filenames) if not f.endswith(".pyc"))
    return sorted(files)


def hash_files(root: Path, files: Iterable[str]) -> str:
    """sha256 over each file's relative path, executable bit and content (symlinks: target)."""
    h = hashlib.sha256()
    for rel in sorted(files):
        path = root / rel
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            kind, payload = b"l", os.readlink(path).encode()
        else:
            kind = b"x" if st.st_mode & 0o111 else b"f"
            payload = path.read_bytes()
        h.update(rel.encode() + b"\0" + kind + len(payload).to_bytes(8, "big") + payload)
    return h.hexdigest()


def hash_tree(root: Path) -> str:
    """``hash_files`` over every file under ``root`` (bytecode included)."""
    files = [
        str(Path(dirpath, f).relative_to(root))
        for dirpath, _, filenames in os.walk(root)
        for f in filenames
    ]
    return hash_files(root, files)
