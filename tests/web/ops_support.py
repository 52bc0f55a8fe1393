"""What the VM and playground browser tests share: connecting a provider through the API."""

from __future__ import annotations

from typing import Any

import httpx

from remotecli.testbed import login
from tests.support.poll import eventually
from tests.support.user import PASSWORD, USER
from tests.web.dashboard import Dashboard

ENDED = ("authenticated", "failed", "cancelled", "expired")


def service(dash: Dashboard) -> httpx.Client:
    return dash.controller.client(dash.token("service"))


def connect(dash: Dashboard, user_id: str, provider: str) -> None:
    """The real login flow through the API, as the web product would run it: start it,
    sign in at the test bed, paste the code it shows (Claude and Gemini: paste-code modes)."""
    client = service(dash)
    started = client.post("/api/auth/start", json={"userId": user_id, "provider": provider})
    assert started.status_code == 201, started.text
    session = started.json()
    outcome = login(session["loginUrl"], USER, PASSWORD)
    sent = client.post(f"/api/auth/sessions/{session['id']}/code", json={"code": outcome.code})
    assert sent.status_code == 200, sent.text

    def ended() -> dict[str, Any]:
        body: dict[str, Any] = client.get(f"/api/auth/sessions/{session['id']}").json()
        assert body["phase"] in ENDED, body
        return body

    body = eventually(f"login {session['id']} to end", ended, 20)
    assert body["phase"] == "authenticated", body
