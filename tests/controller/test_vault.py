"""The vault: AES-GCM with key ids, bound to context, rotating keys."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from remotecli.controller.vault.cipher import Sealed, Vault, VaultError

K1 = base64.b64encode(b"1" * 32).decode()
K2 = base64.b64encode(b"2" * 32).decode()


def test_seal_open_round_trip_and_the_ciphertext_hides_the_plaintext() -> None:
    vault = Vault.from_spec(f"a:{K1}")
    sealed = vault.seal(b'{"refreshToken": "rt-secret"}', "credential|alice|codex|1")
    assert sealed.key_id == "a" and b"rt-secret" not in sealed.ciphertext
    assert vault.open(sealed, "credential|alice|codex|1") == b'{"refreshToken": "rt-secret"}'


def test_a_record_moved_to_another_context_does_not_open() -> None:
    vault = Vault.from_spec(f"a:{K1}")
    sealed = vault.seal(b"x", "credential|alice|codex|1")
    with pytest.raises(VaultError, match="failed authentication"):
        vault.open(sealed, "credential|bob|codex|1")
    tampered = Sealed(sealed.key_id, sealed.nonce, sealed.ciphertext[:-1] + b"\0")
    with pytest.raises(VaultError):
        vault.open(tampered, "credential|alice|codex|1")


def test_rotation_new_key_seals_old_key_still_opens() -> None:
    old = Vault.from_spec(f"a:{K1}")
    sealed_before = old.seal(b"before", "ctx")
    rotated = Vault.from_spec(f"b:{K2},a:{K1}")
    assert rotated.open(sealed_before, "ctx") == b"before"
    assert rotated.seal(b"after", "ctx").key_id == "b"
    with pytest.raises(VaultError, match="no vault key 'a'"):
        Vault.from_spec(f"b:{K2}").open(sealed_before, "ctx")


def test_key_file_is_created_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "state" / "vault.key"
    first = Vault.from_file(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    sealed = first.seal(b"x", "ctx")
    assert Vault.from_file(path).open(sealed, "ctx") == b"x"


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "vault.key"
    Vault.from_file(path)
    path.chmod(0o644)
    with pytest.raises(VaultError, match="chmod 600"):
        Vault.from_file(path)


@pytest.mark.parametrize("spec", ["a:not-base64!", f"a:{base64.b64encode(b'short').decode()}", ""])
def test_bad_keys_are_refused(spec: str) -> None:
    with pytest.raises(VaultError):
        Vault.from_spec(spec)


def test_repr_shows_no_key_material() -> None:
    vault = Vault.from_spec(f"a:{K1}")
    assert K1 not in repr(vault) and "1111" not in repr(vault)
