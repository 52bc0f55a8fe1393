"""Users, API tokens and who may do what, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import stat

import pytest

from remotecli.controller.settings import Settings
from tests.support.controller import Controller, run_controller


def _error(response: object) -> tuple[int, str]:
    import httpx

    assert isinstance(response, httpx.Response)
    body = response.json()
    assert body["message"], body
    return response.status_code, body["code"]


def test_first_start_writes_an_admin_token_only_root_can_read(
    controller: Controller,
) -> None:
    path = controller.settings.state_dir / "admin.token"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert controller.admin_token.startswith("rcli_admin_")
    assert controller.client(None).get("/api/health").json()["status"] == "ok"


def test_tokens_and_what_each_kind_may_do(controller: Controller) -> None:
    admin = controller.client()
    assert admin.post("/api/users", json={"id": "alice"}).status_code == 201
    assert admin.post("/api/users", json={"id": "bob"}).status_code == 201
    user = admin.post("/api/tokens", json={"kind": "user", "userId": "alice"}).json()
    service = admin.post("/api/tokens", json={"kind": "service", "name": "web"}).json()
    assert user["token"].startswith("rcli_user_") and service["token"].startswith("rcli_service_")

    alice = controller.client(user["token"])
    assert alice.get("/api/users/alice").json()["id"] == "alice"
    assert _error(alice.get("/api/users/bob")) == (403, "forbidden_user")
    assert _error(alice.post("/api/users", json={"id": "eve"})) == (403, "admin_required")
    assert _error(alice.post("/api/tokens", json={"kind": "admin"})) == (403, "admin_required")

    web = controller.client(service["token"])
    assert web.get("/api/users/bob").json()["id"] == "bob"
    assert web.post("/api/users", json={"id": "carol"}).status_code == 201
    assert _error(web.post("/api/tokens", json={"kind": "user", "userId": "carol"})) == (
        403, "admin_required",
    )  # fmt: skip


def test_a_revoked_token_stops_working_and_the_last_admin_token_stays(
    controller: Controller,
) -> None:
    admin = controller.client()
    assert admin.post("/api/users", json={"id": "alice"}).status_code == 201
    made = admin.post("/api/tokens", json={"kind": "user", "userId": "alice", "name": "app"})
    user = made.json()
    alice = controller.client(user["token"])
    assert alice.get("/api/users/alice").status_code == 200

    listed = admin.get("/api/tokens")
    assert listed.status_code == 200, listed.text
    mine = next(t for t in listed.json() if t["id"] == user["id"])
    assert mine["kind"] == "user" and mine["userId"] == "alice" and mine["name"] == "app"
    assert mine["lastUsedAt"] is not None and mine["revokedAt"] is None
    assert user["token"] not in listed.text and "token" not in mine  # only the hash is kept
    assert _error(alice.get("/api/tokens")) == (403, "admin_required")
    assert _error(alice.delete(f"/api/tokens/{user['id']}")) == (403, "admin_required")

    revoked = admin.delete(f"/api/tokens/{user['id']}")
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revokedAt"] is not None
    assert _error(alice.get("/api/users/alice")) == (401, "invalid_token")
    again = admin.delete(f"/api/tokens/{user['id']}")  # a no-op: the first revocation stands
    assert again.json()["revokedAt"] == revoked.json()["revokedAt"]
    assert _error(admin.delete("/api/tokens/tok_0123456789abcdef")) == (404, "unknown_token")

    # The bootstrap admin token is the only admin token: revoking it would lock admins out.
    (bootstrap,) = [t for t in admin.get("/api/tokens").json() if t["kind"] == "admin"]
    assert _error(admin.delete(f"/api/tokens/{bootstrap['id']}")) == (409, "last_admin_token")
    second = admin.post("/api/tokens", json={"kind": "admin", "name": "ops"}).json()
    assert admin.delete(f"/api/tokens/{bootstrap['id']}").status_code == 200
    assert _error(admin.get("/api/tokens")) == (401, "invalid_token")
    ops = controller.client(second["token"])
    assert _error(ops.delete(f"/api/tokens/{second['id']}")) == (409, "last_admin_token")


@pytest.mark.parametrize(
    ("headers", "code"),
    [({}, "token_required"), ({"Authorization": "Basic abc"}, "token_required"),
     ({"Authorization": "Bearer rcli_admin_nope"}, "invalid_token")],
)  # fmt: skip
def test_missing_or_wrong_tokens_are_401(
    controller: Controller, headers: dict[str, str], code: str
) -> None:
    response = controller.client(None).get("/api/users/alice", headers=headers)
    assert _error(response) == (401, code)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [({"id": "has space"}, 422, "invalid_request"), ({"id": "../etc"}, 422, "invalid_request"),
     ({"id": "x", "extra": 1}, 422, "invalid_request"), ({}, 422, "invalid_request")],
)  # fmt: skip
def test_bad_user_bodies_are_refused_and_nothing_is_written(
    controller: Controller, body: dict[str, object], status: int, code: str
) -> None:
    admin = controller.client()
    assert _error(admin.post("/api/users", json=body)) == (status, code)
    assert admin.get("/api/users/x").status_code == 404


def test_duplicate_user_and_bad_token_requests(controller: Controller) -> None:
    admin = controller.client()
    admin.post("/api/users", json={"id": "alice"})
    assert _error(admin.post("/api/users", json={"id": "alice"})) == (409, "user_exists")
    assert _error(admin.post("/api/tokens", json={"kind": "user"})) == (400, "user_id_required")
    assert _error(admin.post("/api/tokens", json={"kind": "user", "userId": "zed"})) == (
        404, "unknown_user",
    )  # fmt: skip
    assert _error(admin.post("/api/tokens", json={"kind": "service", "userId": "alice"})) == (
        400, "user_id_not_allowed",
    )  # fmt: skip


def test_restart_keeps_users_and_tokens(settings: Settings) -> None:
    with run_controller(settings) as first:
        first.client().post("/api/users", json={"id": "alice"})
        token = first.client().post("/api/tokens", json={"kind": "user", "userId": "alice"}).json()
    with run_controller(settings) as second:
        assert second.admin_token == first.admin_token  # no second bootstrap
        assert second.client(token["token"]).get("/api/users/alice").status_code == 200


def test_openapi_is_served_and_shows_no_secrets(controller: Controller) -> None:
    spec = controller.client(None).get("/openapi.json").json()
    assert "/api/users" in spec["paths"]
    assert "rcli_admin_" not in str(spec)
