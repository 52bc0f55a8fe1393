"""The controller tests' own fixtures: the nspawn backend's image and settings (the VM tests on
nspawn and the fault tests that kill systemd-nspawn)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from remotecli.controller.settings import Settings
from remotecli.images.build import ensure_test_image
from remotecli.vmm import hostcheck


@pytest.fixture(scope="module")
def test_image() -> Path:
    check = next(c for c in hostcheck.assess(hostcheck.gather()) if c.name == "nspawn")
    if not check.can_run:
        pytest.skip("nspawn cannot run here: " + "; ".join(check.reasons))
    return ensure_test_image().rootfs  # cached after the first build (~1 min)


@pytest.fixture
def nspawn_settings(tmp_path: Path, state_dir: Path, test_image: Path) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = dict(
            environment="test", state_dir=state_dir, backend="nspawn",
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'remotecli.db'}",
            warm_pool_auth=0, warm_pool_cli=0, health_interval_seconds=1.0,
        )  # fmt: skip
        return Settings(**{**values, **overrides})

    return make
