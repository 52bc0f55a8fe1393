"""PKCE, random tokens and JWTs: the small crypto the test bed shares.

Used by the fake authorization server and by the fake CLIs (which do a real
PKCE S256 exchange against it). Stdlib only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from typing import Any

_USER_CODE_LETTERS = "BCDFGHJKLMNPQRSTVWXZ"  # no vowels: no words in a code, as RFC 8628 suggests


def b64url(data: bytes) -> str:
    """Base64url without padding (RFC 7636 appendix A)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def random_token(nbytes: int = 32) -> str:
    """A URL-safe random string (``nbytes`` of entropy)."""
    return b64url(secrets.token_bytes(nbytes))


def pkce_verifier() -> str:
    """A 43-character code verifier, as every one of the three CLIs makes it."""
    return random_token(32)


def pkce_challenge(verifier: str) -> str:
    """The S256 challenge of ``verifier``."""
    return b64url(hashlib.sha256(verifier.encode("ascii")).digest())


def user_code() -> str:
    """A device-flow user code like ``BCDF-1234``."""
    letters = "".join(secrets.choice(_USER_CODE_LETTERS) for _ in range(4))
    digits = "".join(secrets.choice("0123456789") for _ in range(4))
    return f"{letters}-{digits}"


def jwt_encode(payload: dict[str, Any], key: bytes, kid: str = "testbed") -> str:
    """An HS256-signed JWT (header.payload.signature, base64url parts)."""
    header = {"alg": "HS256", "typ": "JWT", "kid": kid}
    signing_input = ".".join(
        b64url(json.dumps(part, separators=(",", ":"), sort_keys=True).encode())
        for part in (header, payload)
    )
    signature = hmac.new(key, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def jwt_payload(token: str) -> dict[str, Any]:
    """The payload of a JWT, without verifying it (what the CLIs do with id tokens).

    Raises ``ValueError`` when ``token`` is not three base64url parts with a JSON
    object in the middle.
    """
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError("a JWT has three dot-separated parts")
    try:
        payload = json.loads(b64url_decode(parts[1]))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"JWT payload is not base64url JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise ValueError("JWT payload is not a JSON object")
    return payload
