"""Settings: zero set-up in development, refusals in production."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from remotecli.controller.settings import Settings


def test_development_defaults_need_nothing(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    assert settings.resolved_database_url == f"sqlite+aiosqlite:///{tmp_path / 'remotecli.db'}"
    assert settings.resolved_vault_key_file == tmp_path / "vault.key"
    assert (settings.host, settings.port) == ("127.0.0.1", 4000)


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REMOTECLI_PORT", "4100")
    monkeypatch.setenv("REMOTECLI_BACKEND", "fake")
    settings = Settings()
    assert (settings.port, settings.backend) == (4100, "fake")


def test_production_refuses_every_development_default() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(environment="production", demo=True, backend="fake")
    message = str(caught.value)
    for needle in (
        "REMOTECLI_DEMO",
        "REMOTECLI_VAULT_KEYS",
        "REMOTECLI_DATABASE_URL",
        "fake backend",
    ):
        assert needle in message


def test_production_with_real_settings_starts() -> None:
    settings = Settings(
        environment="production",
        vault_keys="k1:" + "A" * 43 + "=",
        database_url="postgresql+psycopg://u:p@db/remotecli",
        backend="nspawn",
    )
    assert settings.environment == "production"
    assert "A" * 43 not in repr(settings)
