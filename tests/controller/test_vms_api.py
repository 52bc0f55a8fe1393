"""The VM routes and /metrics: admin only, bad input refused, and the backend/image choice."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from remotecli.controller.db.models import VmRole
from remotecli.controller.fleet.runtime import (
    choose_backend,
    choose_image,
    make_backend,
    state_root,
)
from remotecli.controller.settings import Settings
from remotecli.errors import BackendUnavailable, ImageError
from remotecli.vmm.hostcheck import BackendCheck
from tests.support.controller import vm_controller


def _error(response: httpx.Response) -> tuple[int, str]:
    body = response.json()
    assert body["message"], body
    return response.status_code, body["code"]


def test_every_route_needs_an_admin_token(make_settings: Callable[..., Settings]) -> None:
    with vm_controller(make_settings()) as ctl:
        ctl.add_user("erin")
        user = ctl.client().post("/api/tokens", json={"kind": "user", "userId": "erin"}).json()
        service = ctl.client().post("/api/tokens", json={"kind": "service"}).json()
        vm_id = ctl.call(ctl.vms.cli_vm("erin")).vm_id
        routes = [
            ("GET", "/api/vms"), ("GET", f"/api/vms/{vm_id}"),
            ("GET", f"/api/vms/{vm_id}/console"), ("GET", f"/api/vms/{vm_id}/sessions"),
            ("DELETE", f"/api/vms/{vm_id}"),
            ("GET", "/metrics"),
        ]  # fmt: skip
        for method, path in routes:
            assert _error(ctl.client(None).request(method, path)) == (401, "token_required"), path
            for token in (user["token"], service["token"]):
                response = ctl.client(token).request(method, path)
                assert _error(response) == (403, "admin_required"), (path, token[:10])
        assert ctl.vm(vm_id)["state"] == "claimed"  # nothing was deleted by the refusals
        for method, path in routes:
            assert ctl.client().request(method, path).status_code == 200, path


def test_bad_ids_and_parameters_are_refused(make_settings: Callable[..., Settings]) -> None:
    with vm_controller(make_settings()) as ctl:
        admin = ctl.client()
        vm_id = ctl.call(ctl.vms.claim(VmRole.AUTH)).vm_id
        assert _error(admin.get("/api/vms/vm_0000000000000000")) == (404, "unknown_vm")
        assert _error(admin.delete("/api/vms/vm_0000000000000000")) == (404, "unknown_vm")
        assert _error(admin.get("/api/vms/not-a-vm")) == (422, "invalid_request")
        assert _error(admin.get(f"/api/vms/{vm_id}/console?lines=0")) == (422, "invalid_request")
        assert _error(admin.get("/api/vms?limit=0")) == (422, "invalid_request")
        assert len(admin.get(f"/api/vms/{vm_id}/console?lines=1").text.splitlines()) == 1
        assert admin.get("/api/vms?limit=1").json()["vms"][0]["id"] == vm_id
        # the agent's token never leaves the controller
        assert ctl.vms.get(vm_id) is not None
        listing = admin.get("/api/vms?all=true").text + admin.get(f"/api/vms/{vm_id}").text
        token = ctl.call(ctl.vms.store.get(vm_id))
        assert token is not None and ctl.vms.store.open_token(token) not in listing


def _check(name: str, can_run: bool, reason: str = "because") -> BackendCheck:
    return BackendCheck(name, can_run, "x", (reason,))


CHECKS = [_check("firecracker", True), _check("qemu", True), _check("nspawn", True),
          _check("fake", True)]  # fmt: skip


def test_auto_picks_the_best_implemented_backend(tmp_path: Path) -> None:
    settings = Settings(environment="test", state_dir=tmp_path)
    assert choose_backend(settings, CHECKS)[0] == "firecracker"
    no_fc = [_check("firecracker", False, "no vmx/svm"), *CHECKS[1:]]
    assert choose_backend(settings, no_fc)[0] == "qemu"
    # QEMU under software emulation can run but is never picked by auto
    tcg = BackendCheck("qemu", True, "vm", ("software emulation only (TCG)",), pickable=False)
    assert choose_backend(settings, [no_fc[0], tcg, *CHECKS[2:]])[0] == "nspawn"
    no_nspawn = [no_fc[0], tcg, _check("nspawn", False, "needs root"), CHECKS[3]]
    assert choose_backend(settings, no_nspawn)[0] == "fake"
    production = Settings(
        environment="production", state_dir=tmp_path, vault_keys="x",
        database_url="postgresql+psycopg://u@h/db",
    )  # fmt: skip
    with pytest.raises(
        BackendUnavailable,
        match=r"production refuses the fake backend.*firecracker: no vmx/svm.*nspawn: needs root",
    ):
        choose_backend(production, no_nspawn)
    explicit = Settings(environment="test", state_dir=tmp_path, backend="nspawn")
    with pytest.raises(
        BackendUnavailable, match=r"REMOTECLI_BACKEND=nspawn cannot run.*needs root"
    ):
        choose_backend(explicit, no_nspawn)


def test_state_dirs_too_deep_for_sockets_are_refused(tmp_path: Path) -> None:
    deep = Settings(environment="test", state_dir=Path("/tmp/" + "d" * 70))
    with pytest.raises(BackendUnavailable, match="REMOTECLI_STATE_DIR to a shorter path"):
        make_backend("fake", deep)
    assert state_root(Settings(state_dir=tmp_path), "fake") == tmp_path.resolve() / "fake"


@pytest.mark.anyio
async def test_no_image_says_how_to_build_one(tmp_path: Path) -> None:
    settings = Settings(environment="development", state_dir=tmp_path)
    with pytest.raises(ImageError, match="remotecli image build --providers"):
        await choose_image(settings, "nspawn", cache=tmp_path / "cache")
    assert await choose_image(settings, "fake", cache=tmp_path / "cache") == Path("/")
    with pytest.raises(ImageError, match="not a golden image"):
        await choose_image(Settings(image=tmp_path, state_dir=tmp_path), "nspawn")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
