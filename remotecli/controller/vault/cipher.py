"""Secrets at rest: AES-256-GCM with key ids, so keys can rotate.

Every sealed record keeps the id of the key that sealed it and is bound to
its context (``aad``: e.g. ``credential|user|provider|version``), so a
ciphertext moved to another row does not open. The first key of the ring
seals; every key in the ring opens. Keys come from ``REMOTECLI_VAULT_KEYS``
(``id:base64,id:base64``) or from a key file created with mode 0600 on first
start. Nothing here ever logs or returns a key or a plaintext. A missing or
wrong key, or a record that does not open, is a ``VaultError`` (a
``RemoteCliError``, in the tree drawn in ``remotecli/errors.py``).
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from remotecli.errors import RemoteCliError

KEY_BYTES = 32
NONCE_BYTES = 12


class VaultError(RemoteCliError):
    code = "vault_error"


@dataclass(frozen=True)
class Sealed:
    key_id: str
    nonce: bytes
    ciphertext: bytes


class Vault:
    def __init__(self, keys: list[tuple[str, bytes]]) -> None:
        if not keys:
            raise VaultError("the vault needs at least one key")
        for key_id, key in keys:
            if len(key) != KEY_BYTES:
                raise VaultError(f"vault key {key_id!r} must be {KEY_BYTES} bytes")
        self._keys = dict(keys)
        self.current_key_id = keys[0][0]

    def __repr__(self) -> str:  # never show key material
        return f"Vault(keys={sorted(self._keys)}, sealing={self.current_key_id!r})"

    def seal(self, plaintext: bytes, aad: str) -> Sealed:
        nonce = os.urandom(NONCE_BYTES)
        key = self._keys[self.current_key_id]
        ciphertext = AESGCM(key).encrypt(nonce, plaintext, aad.encode())
        return Sealed(self.current_key_id, nonce, ciphertext)

    def open(self, sealed: Sealed, aad: str) -> bytes:
        key = self._keys.get(sealed.key_id)
        if key is None:
            raise VaultError(
                f"no vault key {sealed.key_id!r} to open this record; add it to "
                "REMOTECLI_VAULT_KEYS (keys are retired only after re-sealing)"
            )
        try:
            return AESGCM(key).decrypt(sealed.nonce, sealed.ciphertext, aad.encode())
        except InvalidTag as exc:
            raise VaultError(
                "a vault record failed authentication (wrong key or tampered data)"
            ) from exc

    @classmethod
    def from_spec(cls, spec: str) -> Vault:
        """``id:base64[,id:base64...]``; a bare base64 key gets the id ``k1``."""
        keys: list[tuple[str, bytes]] = []
        for part in spec.split(","):
            part = part.strip()
            if not part:
                continue
            key_id, sep, encoded = part.partition(":")
            if not sep:
                key_id, encoded = "k1", part
            try:
                keys.append((key_id, base64.b64decode(encoded, validate=True)))
            except (binascii.Error, ValueError) as exc:
                raise VaultError(f"vault key {key_id!r} is not valid base64") from exc
        return cls(keys)

    @classmethod
    def from_file(cls, path: Path) -> Vault:
        """Read the key file, creating it (mode 0600) with a fresh key on first start."""
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            spec = f"k{secrets.token_hex(4)}:{base64.b64encode(os.urandom(KEY_BYTES)).decode()}"
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass  # another process created it first: read theirs
            else:
                with os.fdopen(fd, "w") as fh:
                    fh.write(spec + "\n")
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise VaultError(
                f"the vault key file {path} is readable by others (mode {mode:04o}); "
                f"run: chmod 600 {path}"
            )
        return cls.from_spec(path.read_text().strip())
