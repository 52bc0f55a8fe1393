"""The user at a browser: the test bed's account, and signing in at a login's URL."""

from __future__ import annotations

from typing import Any

from remotecli.testbed import DEFAULT_USERS, approve_device, login

USER, PASSWORD = next(iter(DEFAULT_USERS.items()))


def answer_for(session: dict[str, Any]) -> dict[str, str] | None:
    """Sign in at the session's URL as the test bed's user; return what the user pastes."""
    if session["mode"] == "device_code":
        approve_device(session["loginUrl"], session["userCode"], USER, PASSWORD)
        return None
    outcome = login(session["loginUrl"], USER, PASSWORD)
    if session["mode"] == "localhost_callback":
        assert outcome.redirect_url is not None
        return {"callbackUrl": outcome.redirect_url}
    assert outcome.code is not None
    return {"code": outcome.code}
