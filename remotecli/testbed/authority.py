"""The authorization server's state and rules, without HTTP.

One ``Authority`` holds users, pending authorization codes, device
authorizations and every token it issued, behind one lock. Each successful
login starts a *chain* (a grant): every access and refresh token descended
from that login belongs to it, so reuse detection can revoke the whole chain,
as Claude's and OpenAI's servers do. Stdlib only.
"""

from __future__ import annotations

import dataclasses
import hmac
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from remotecli.testbed.clients import (
    CLIENTS,
    ClientSpec,
    account_id,
    decode_claude_short_link,
    google_sub,
)
from remotecli.testbed.records import (
    CODEX_REFRESH_ERRORS,
    AccessRecord,
    AuthorizeRequest,
    CodeRecord,
    DeviceRecord,
    Grant,
    IssuedToken,
    IssueRecord,
    OAuthError,
    RefreshRecord,
)
from remotecli.testbed.tokens import (
    jwt_encode,
    pkce_challenge,
    random_token,
    user_code,
)

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
_CHALLENGE_LENGTH = 43  # base64url of a SHA-256 digest


@dataclass
class Authority:
    """Thread-safe OAuth state for the three providers; see the module docstring."""

    base_url: str
    users: Mapping[str, str]
    access_token_ttl: float = 3600.0
    refresh_token_ttl: float = 30 * 24 * 3600.0
    code_ttl: float = 600.0
    device_code_ttl: float = 900.0
    device_interval: float = 5.0
    clock: Callable[[], float] = time.time
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _signing_key: bytes = field(default_factory=lambda: secrets.token_bytes(32), init=False)
    _codes: dict[str, CodeRecord] = field(default_factory=dict, init=False)
    _grants: dict[str, Grant] = field(default_factory=dict, init=False)
    _access: dict[str, AccessRecord] = field(default_factory=dict, init=False)
    _refresh: dict[str, RefreshRecord] = field(default_factory=dict, init=False)
    _devices: dict[str, DeviceRecord] = field(default_factory=dict, init=False)
    _issued: list[IssueRecord] = field(default_factory=list, init=False)

    # --- authorization endpoint ---------------------------------------------

    def client(self, provider: str) -> ClientSpec:
        return CLIENTS[provider]

    def parse_authorize(self, provider: str, params: Mapping[str, str]) -> AuthorizeRequest:
        """Validate ``/authorize`` parameters; raise ``OAuthError`` naming what is wrong."""
        spec = self.client(provider)

        def need(name: str) -> str:
            value = params.get(name, "")
            if not value:
                raise OAuthError("invalid_request", f"missing required parameter: {name}")
            return value

        if need("response_type") != "code":
            raise OAuthError("unsupported_response_type", "response_type must be 'code'")
        if need("client_id") != spec.client_id:
            raise OAuthError("invalid_client", f"unknown client_id for {provider}")
        redirect_uri = need("redirect_uri")
        if redirect_uri not in spec.redirect_uris(self.base_url):
            raise OAuthError(
                "invalid_request", f"redirect_uri is not registered for this client: {redirect_uri}"
            )
        if need("code_challenge_method") != "S256":
            raise OAuthError("invalid_request", "code_challenge_method must be S256")
        challenge = need("code_challenge")
        if len(challenge) != _CHALLENGE_LENGTH:
            raise OAuthError("invalid_request", "code_challenge must be 43 base64url characters")
        state = need("state")
        scope = params.get("scope") or " ".join(spec.default_scopes)
        return AuthorizeRequest(provider, spec.client_id, redirect_uri, scope, state, challenge)

    def expand_claude_short_link(self, query: str) -> dict[str, str] | None:
        """The full parameters behind Claude's short sign-in link (``?<scope bits><challenge>``).

        The short link carries no state, so the server makes one, as claude.ai does:
        the CLI does not check the state of a pasted code.
        """
        decoded = decode_claude_short_link(query)
        if decoded is None:
            return None
        _client_index, scopes, challenge = decoded
        return {
            "code": "true",
            "response_type": "code",
            "client_id": CLIENTS["claude"].client_id,
            "redirect_uri": CLIENTS["claude"].redirect_uris(self.base_url)[0],
            "scope": " ".join(scopes),
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "state": random_token(32),
        }

    def check_password(self, email: str, password: str) -> bool:
        expected = self.users.get(email)
        return expected is not None and hmac.compare_digest(expected, password)

    def issue_code(self, request: AuthorizeRequest, email: str) -> str:
        code = random_token(24)
        with self._lock:
            self._codes[code] = CodeRecord(code, request, email, self.clock() + self.code_ttl)
        return code

    # --- token endpoint -------------------------------------------------------

    def token(self, provider: str, params: Mapping[str, str]) -> dict[str, Any]:
        """Handle one token request; raise ``OAuthError`` for every refusal."""
        grant_type = params.get("grant_type", "")
        spec = self.client(provider)
        client_id = params.get("client_id", "")
        if client_id and client_id != spec.client_id:
            raise OAuthError("invalid_client", f"unknown client_id for {provider}", status=401)
        if grant_type == "authorization_code":
            return self._exchange_code(spec, params)
        if grant_type == "refresh_token":
            return self._refresh_token(spec, params)
        if grant_type == DEVICE_CODE_GRANT:
            return self._poll_device(spec, params)
        if not grant_type:
            raise OAuthError("invalid_request", "missing required parameter: grant_type")
        raise OAuthError("unsupported_grant_type", f"unsupported grant_type: {grant_type}")

    def _exchange_code(self, spec: ClientSpec, params: Mapping[str, str]) -> dict[str, Any]:
        code = params.get("code", "")
        verifier = params.get("code_verifier", "")
        if not code:
            raise OAuthError("invalid_request", "missing required parameter: code")
        if not verifier:
            raise OAuthError("invalid_request", "missing required parameter: code_verifier")
        with self._lock:
            record = self._codes.get(code)
            if record is None or record.request.provider != spec.provider:
                raise OAuthError("invalid_grant", "Invalid 'code' in request.")
            if record.grant_id is not None:
                # RFC 6749 §4.1.2: a replayed code revokes what it was exchanged for.
                self._revoke_grant(record.grant_id, "authorization code replayed")
                raise OAuthError("invalid_grant", "Authorization code has already been used.")
            if self.clock() >= record.expires_at:
                del self._codes[code]
                raise OAuthError("invalid_grant", "Authorization code has expired.")
            if params.get("redirect_uri", "") != record.request.redirect_uri:
                raise OAuthError("invalid_grant", "redirect_uri does not match the authorization.")
            if pkce_challenge(verifier) != record.request.code_challenge:
                raise OAuthError("invalid_grant", "Invalid code verifier.")
            grant = self._new_grant(spec, record.email, record.request.scope)
            record.grant_id = grant.id
            return self._issue(spec, grant, "authorization_code", new_refresh=True)

    def _refresh_token(self, spec: ClientSpec, params: Mapping[str, str]) -> dict[str, Any]:
        token = params.get("refresh_token", "")
        if not token:
            raise OAuthError("invalid_request", "missing required parameter: refresh_token")
        with self._lock:
            now = self.clock()
            record = self._refresh.get(token)
            grant = self._grants.get(record.grant_id) if record is not None else None
            if record is None or grant is None or grant.provider != spec.provider:
                raise self._refresh_error(spec, "refresh_token_invalidated", unknown=True)
            if grant.revoked_reason is not None:
                raise self._refresh_error(spec, "refresh_token_invalidated")
            if record.used_at is not None:
                # Reuse detection: a spent token came back, so someone holds a copy.
                self._revoke_grant(grant.id, "refresh token reused")
                raise self._refresh_error(spec, "refresh_token_reused")
            if now >= record.expires_at:
                raise self._refresh_error(spec, "refresh_token_expired")
            if spec.rotates_refresh_tokens:
                record.used_at = now
            return self._issue(
                spec, grant, "refresh_token", new_refresh=spec.rotates_refresh_tokens, refresh=token
            )

    def _refresh_error(self, spec: ClientSpec, code: str, unknown: bool = False) -> OAuthError:
        if spec.provider == "codex":
            return OAuthError("invalid_grant", CODEX_REFRESH_ERRORS[code], 401, openai_code=code)
        if spec.provider == "gemini":
            return OAuthError("invalid_grant", "Token has been expired or revoked.")
        description = {
            "refresh_token_reused": "Refresh token has already been used.",
            "refresh_token_expired": "Refresh token has expired.",
            "refresh_token_invalidated": "Refresh token not found or invalid"
            if unknown
            else "Refresh token has been revoked.",
        }[code]
        return OAuthError("invalid_grant", description)

    # --- device authorization (RFC 8628) ---------------------------------------

    def device_start(self, provider: str, params: Mapping[str, str]) -> dict[str, Any]:
        spec = self.client(provider)
        if params.get("client_id", "") != spec.client_id:
            raise OAuthError("invalid_client", f"unknown client_id for {provider}", status=401)
        scope = params.get("scope") or " ".join(spec.default_scopes)
        device = DeviceRecord(
            device_code=random_token(32),
            user_code=user_code(),
            provider=provider,
            scope=scope,
            expires_at=self.clock() + self.device_code_ttl,
            interval=self.device_interval,
        )
        with self._lock:
            self._devices[device.device_code] = device
        verification_uri = f"{self.base_url}/{provider}/device"
        return {
            "device_code": device.device_code,
            "user_code": device.user_code,
            "verification_uri": verification_uri,
            "verification_uri_complete": f"{verification_uri}?user_code={device.user_code}",
            "expires_in": int(self.device_code_ttl),
            "interval": _number(self.device_interval),
        }

    def device_decide(
        self, provider: str, code: str, email: str, password: str, approve: bool = True
    ) -> None:
        """The user at ``/device`` typed ``code`` and signed in: approve (or deny) it."""
        if not self.check_password(email, password):
            raise OAuthError("access_denied", "Wrong email or password.", status=401)
        wanted = code.strip().upper()
        with self._lock:
            for device in self._devices.values():
                if device.provider == provider and device.user_code == wanted:
                    if device.status != "pending" or self.clock() >= device.expires_at:
                        raise OAuthError("expired_token", "This code has expired or was used.")
                    device.status = "approved" if approve else "denied"
                    device.email = email
                    return
        raise OAuthError("invalid_request", "Unknown code. Check the code and try again.")

    def _poll_device(self, spec: ClientSpec, params: Mapping[str, str]) -> dict[str, Any]:
        with self._lock:
            now = self.clock()
            device = self._devices.get(params.get("device_code", ""))
            if device is None or device.provider != spec.provider:
                raise OAuthError("invalid_grant", "Unknown device_code.")
            if device.status == "consumed":
                raise OAuthError("invalid_grant", "device_code has already been used.")
            if now >= device.expires_at:
                raise OAuthError("expired_token", "The device code has expired.")
            if device.status == "denied":
                raise OAuthError("access_denied", "The user denied the authorization request.")
            too_fast = device.last_poll is not None and now - device.last_poll < device.interval
            device.last_poll = now
            if device.status == "pending":
                if too_fast:
                    device.interval += 5  # RFC 8628 §3.5
                    raise OAuthError("slow_down", f"Poll at most every {device.interval:g} s.")
                raise OAuthError("authorization_pending", "The user has not yet approved.")
            assert device.email is not None
            device.status = "consumed"
            grant = self._new_grant(spec, device.email, device.scope)
            return self._issue(spec, grant, "device_code", new_refresh=True)

    # --- resource side --------------------------------------------------------

    def userinfo(self, provider: str, bearer: str) -> dict[str, Any]:
        with self._lock:
            record = self._access.get(bearer)
            grant = self._grants.get(record.grant_id) if record is not None else None
            if record is None or grant is None or grant.provider != provider:
                raise OAuthError("invalid_token", "Invalid bearer token.", status=401)
            if grant.revoked_reason is not None:
                raise OAuthError("invalid_token", "OAuth token has been revoked.", status=401)
            if self.clock() >= record.expires_at:
                raise OAuthError("invalid_token", "OAuth token has expired.", status=401)
            email = grant.email
        info: dict[str, Any] = {
            "email": email,
            "sub": google_sub(email) if provider == "gemini" else account_id(provider, email),
            "account_id": account_id(provider, email),
            "provider": provider,
        }
        if provider == "gemini":
            info.update({"id": info["sub"], "verified_email": True, "name": email.split("@")[0]})
        return info

    # --- inspection for tests ---------------------------------------------------

    def issued_tokens(self, provider: str | None = None) -> list[IssuedToken]:
        with self._lock:
            out = []
            for issue in self._issued:
                if provider is not None and issue.provider != provider:
                    continue
                grant = self._grants[issue.grant_id]
                refresh = self._refresh[issue.refresh]
                out.append(
                    IssuedToken(
                        provider=issue.provider,
                        email=grant.email,
                        grant_id=grant.id,
                        access_token=issue.access,
                        refresh_token=issue.refresh,
                        access_expires_at=self._access[issue.access].expires_at,
                        via=issue.via,
                        revoked=grant.revoked_reason is not None,
                        refresh_used=refresh.used_at is not None,
                    )
                )
            return out

    def grants(self, provider: str | None = None) -> list[Grant]:
        with self._lock:
            return [
                dataclasses.replace(g)
                for g in self._grants.values()
                if provider is None or g.provider == provider
            ]

    def revoke_all(self, provider: str | None = None, reason: str = "revoked by test") -> int:
        """Revoke every chain (of ``provider``); returns how many were live."""
        with self._lock:
            live = [
                g
                for g in self._grants.values()
                if g.revoked_reason is None and (provider is None or g.provider == provider)
            ]
            for grant in live:
                grant.revoked_reason = reason
            return len(live)

    def expire_access_tokens(self, provider: str | None = None) -> int:
        """Make every access token (of ``provider``) expired now; returns how many."""
        with self._lock:
            now = self.clock()
            count = 0
            for record in self._access.values():
                if provider is None or self._grants[record.grant_id].provider == provider:
                    record.expires_at = min(record.expires_at, now - 1)
                    count += 1
            return count

    def expire_refresh_tokens(self, provider: str | None = None) -> int:
        with self._lock:
            now = self.clock()
            count = 0
            for record in self._refresh.values():
                if provider is None or self._grants[record.grant_id].provider == provider:
                    record.expires_at = min(record.expires_at, now - 1)
                    count += 1
            return count

    def expire_device_codes(self) -> None:
        with self._lock:
            for device in self._devices.values():
                device.expires_at = min(device.expires_at, self.clock() - 1)

    def pending_user_codes(self, provider: str) -> list[str]:
        with self._lock:
            return [
                d.user_code
                for d in self._devices.values()
                if d.provider == provider and d.status == "pending"
            ]

    # --- internals (call with the lock held) --------------------------------------

    def _new_grant(self, spec: ClientSpec, email: str, scope: str) -> Grant:
        if spec.one_chain_per_user:
            for other in self._grants.values():
                if other.provider == spec.provider and other.email == email:
                    other.revoked_reason = other.revoked_reason or "superseded by a newer login"
        grant = Grant(random_token(12), spec.provider, email, scope, self.clock())
        self._grants[grant.id] = grant
        return grant

    def _revoke_grant(self, grant_id: str, reason: str) -> None:
        grant = self._grants.get(grant_id)
        if grant is not None and grant.revoked_reason is None:
            grant.revoked_reason = reason

    def _issue(
        self,
        spec: ClientSpec,
        grant: Grant,
        via: str,
        new_refresh: bool,
        refresh: str | None = None,
    ) -> dict[str, Any]:
        now = self.clock()
        email = grant.email
        if new_refresh or refresh is None:
            refresh = spec.refresh_prefix + random_token(48)
            self._refresh[refresh] = RefreshRecord(refresh, grant.id, now + self.refresh_token_ttl)
        if spec.provider == "codex":
            access = jwt_encode(self._codex_claims(email, now, access=True), self._signing_key)
        else:
            access = spec.access_prefix + random_token(48)
        self._access[access] = AccessRecord(access, grant.id, now + self.access_token_ttl)
        self._issued.append(IssueRecord(spec.provider, grant.id, access, refresh, via))
        body: dict[str, Any] = {
            "access_token": access,
            "refresh_token": refresh,
            "expires_in": int(self.access_token_ttl),
            "token_type": "Bearer",
            "scope": grant.scope,
        }
        if spec.provider == "claude":
            body["organization"] = {
                "uuid": account_id("claude-org", email),
                "name": f"{email}'s Organization",
            }
            body["account"] = {"uuid": account_id("claude", email), "email_address": email}
        elif spec.provider == "codex":
            body["id_token"] = jwt_encode(self._codex_claims(email, now), self._signing_key)
        elif spec.provider == "gemini":
            body["id_token"] = jwt_encode(
                {
                    "iss": f"{self.base_url}/gemini",
                    "azp": spec.client_id,
                    "aud": spec.client_id,
                    "sub": google_sub(email),
                    "email": email,
                    "email_verified": True,
                    "iat": int(now),
                    "exp": int(now + self.access_token_ttl),
                },
                self._signing_key,
            )
        return body

    def _codex_claims(self, email: str, now: float, access: bool = False) -> dict[str, Any]:
        account = account_id("codex", email)
        claims: dict[str, Any] = {
            "iss": f"{self.base_url}/codex",
            "aud": [CLIENTS["codex"].client_id] if not access else ["https://api.openai.com/v1"],
            "sub": f"auth0|{account[:24]}",
            "iat": int(now),
            "exp": int(now + self.access_token_ttl),
            "jti": random_token(8),
            "https://api.openai.com/auth": {
                "chatgpt_account_id": account,
                "chatgpt_plan_type": "plus",
                "chatgpt_user_id": f"user-{account[:24]}",
                "user_id": f"user-{account[:24]}",
            },
        }
        if access:
            claims["https://api.openai.com/profile"] = {"email": email, "email_verified": True}
        else:
            claims.update({"email": email, "email_verified": True, "auth_time": int(now)})
        return claims


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value
