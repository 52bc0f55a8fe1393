"""What a credential record is (its kind) and where it stands (its state), with the moves.

Only the lasting verdicts are stored (CONNECTED, NEEDS_LOGIN); EXPIRED is
computed when shown (``credentials.effective_state``). A new login or key is
a new version, CONNECTED from the start: NEEDS_LOGIN is never left in place.
"""

from __future__ import annotations

import enum

from remotecli.states import State, transitions


class CredentialKind(enum.StrEnum):
    OAUTH = "oauth"  # files captured from a CLI login
    API_KEY = "api_key"  # a key the user gave; no files


class CredentialState(State):
    CONNECTED = "connected"
    EXPIRED = "expired"  # the access token's expiry passed; a refresh may still work
    NEEDS_LOGIN = "needs_login"  # the refresh failed: the user must log in again


CREDENTIAL_TRANSITIONS = transitions(
    CredentialState,
    {
        CredentialState.CONNECTED: {CredentialState.EXPIRED, CredentialState.NEEDS_LOGIN},
        CredentialState.EXPIRED: {CredentialState.CONNECTED, CredentialState.NEEDS_LOGIN},
        CredentialState.NEEDS_LOGIN: set(),
    },
    subject="credential",
)
