"""Credential files in the CLI user's home: read with a content version, write atomically.

Only the paths a provider declares (its credential files and seed files) can
be read or written: a request naming any other path, or a path that escapes
HOME through ``..`` or a symlink, is refused before anything is written. A
write validates every file first and then replaces each with write-to-temp,
fsync, rename, so a reader never sees half a file.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from remotecli.agent.errors import BadRequest
from remotecli.agent.process import RunAs
from remotecli.agent.wire import CredentialFile, Credentials, FileIn
from remotecli.providers import Provider
from remotecli.providers.base import LoginMode

MAX_FILE_BYTES = 256 * 1024


@dataclass(frozen=True)
class FileWrite:
    path: str
    data: bytes
    mode: int


class CredentialStore:
    def __init__(self, home: Path, run_as: RunAs | None) -> None:
        self.home = home
        self.run_as = run_as

    # -- reading ---------------------------------------------------------------

    def read(self, provider: Provider) -> Credentials:
        """The provider's credential files, their sha256 and one version for the set."""
        files: list[CredentialFile] = []
        missing: list[str] = []
        digest = hashlib.sha256()
        for spec in provider.credential_files:
            target = self._resolve(spec.path)
            try:
                data = target.read_bytes()
            except FileNotFoundError:
                missing.append(spec.path)
                continue
            digest.update(spec.path.encode() + b"\0" + data + b"\0")
            files.append(_file_entry(spec.path, data, target.stat().st_mode & 0o777))
        return Credentials(
            provider=provider.name,
            complete=not missing,
            version=digest.hexdigest() if files else None,
            files=files,
            missing=missing,
        )

    def version(self, provider: Provider) -> str | None:
        return self.read(provider).version

    def has_credentials(self, provider: Provider) -> bool:
        return self.read(provider).complete

    # -- writing ---------------------------------------------------------------

    def parse_writes(self, provider: Provider, files: list[FileIn]) -> list[FileWrite]:
        """Check a request's files (their shape is the wire's); raise before anything is written."""
        allowed = {spec.path: spec.mode for spec in provider.credential_files}
        for mode in provider.login_modes:
            allowed.update({seed.path: seed.mode for seed in provider.seed_files(mode)})
        writes: list[FileWrite] = []
        for entry in files:
            path = entry.path
            if path not in allowed:
                names = ", ".join(sorted(allowed))
                raise BadRequest(
                    f"{path!r} is not a file of {provider.name}; allowed: {names}",
                    code="path_not_allowed",
                )
            data = _decode(entry.content, entry.encoding)
            if len(data) > MAX_FILE_BYTES:
                raise BadRequest(
                    f"{path!r} is larger than {MAX_FILE_BYTES} bytes", code="file_too_large"
                )
            self._resolve(path)  # refuse symlink escapes before writing anything
            writes.append(FileWrite(path, data, allowed[path]))
        return writes

    def write(self, writes: list[FileWrite]) -> None:
        for item in writes:
            self._atomic_write(self._resolve(item.path), item.data, item.mode)

    def prepare(self, provider: Provider, mode: LoginMode) -> list[str]:
        """Make the credential directories (mode 0700) and merge the seed files.

        Codex refuses to start when ``CODEX_HOME`` does not exist, so the
        directories must be there before any CLI process is.
        """
        for spec in provider.credential_files:
            self._make_dirs(self._resolve(spec.path).parent)
        return self.seed(provider, mode)

    def seed(self, provider: Provider, mode: LoginMode) -> list[str]:
        """Merge the provider's seed settings into its files; return the paths changed.

        Seeds are JSON objects merged key by key into what is there, so the
        keys we need are set and everything else the user or the CLI wrote stays.
        """
        written: list[str] = []
        for seed in provider.seed_files(mode):
            target = self._resolve(seed.path)
            wanted: dict[str, Any] = json.loads(seed.content)
            try:
                current = json.loads(target.read_bytes())
            except FileNotFoundError:
                current = {}
            except ValueError:
                current = {}  # unreadable: the CLI would not read it either
            if not isinstance(current, dict):
                current = {}
            merged = _merge(current, wanted)
            if merged == current and target.exists():
                continue
            self._atomic_write(target, (json.dumps(merged, indent=2) + "\n").encode(), seed.mode)
            written.append(seed.path)
        return written

    # -- internals -------------------------------------------------------------

    def _resolve(self, relative: str) -> Path:
        home = self.home.resolve()
        target = (home / relative).resolve()
        if home not in target.parents:
            raise BadRequest(f"{relative!r} resolves outside HOME", code="path_not_allowed")
        return target

    def _atomic_write(self, target: Path, data: bytes, mode: int) -> None:
        self._make_dirs(target.parent)
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, mode)
            self._chown(tmp)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise

    def _make_dirs(self, directory: Path) -> None:
        missing = []
        for parent in [directory, *directory.parents]:
            if parent.exists():
                break
            missing.append(parent)
        for parent in reversed(missing):
            parent.mkdir(mode=0o700)
            self._chown(parent)

    def _chown(self, path: Path) -> None:
        if self.run_as is not None and os.geteuid() == 0:
            os.chown(path, self.run_as.uid, self.run_as.gid, follow_symlinks=False)


def _merge(current: dict[str, Any], wanted: dict[str, Any]) -> dict[str, Any]:
    merged = dict(current)
    for key, value in wanted.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _decode(content: str, encoding: str) -> bytes:
    if encoding == "utf-8":
        return content.encode()
    try:
        return base64.b64decode(content, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest("content is not valid base64", code="invalid_files") from exc


def _file_entry(path: str, data: bytes, mode: int) -> CredentialFile:
    sha = hashlib.sha256(data).hexdigest()
    try:
        return CredentialFile(path, f"{mode:04o}", sha, data.decode(), "utf-8")
    except UnicodeDecodeError:
        return CredentialFile(path, f"{mode:04o}", sha, base64.b64encode(data).decode(), "base64")
