"""``image validate``: the seed's checklist against a real boot of the golden image."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from remotecli.cli import app
from remotecli.images.build import ensure_test_image
from remotecli.validation.checklist import validate
from remotecli.vmm.nspawn.backend import NspawnBackend
from tests.vmm import layers

pytestmark = pytest.mark.anyio
ALL_CLIS = ["claude_code", "codex", "gemini_cli"]


async def test_the_golden_image_passes_the_checklist(golden: Path, state_root: Path) -> None:
    report = await validate(NspawnBackend(state_root), golden, ALL_CLIS)
    assert report.not_ready is None
    assert [(c.name, c.evidence) for c in report.checks if not c.ok] == []
    assert len(report.checks) == 13  # 6 unit/agent checks, 3 CLIs, 3 credential dirs, 1 system
    assert os.listdir(state_root) == []


async def test_a_failed_unit_and_an_open_credential_dir_fail_their_checks(
    golden: Path, state_root: Path, layer: Path
) -> None:
    layers.write(layer, "etc/systemd/system/broken.service",
                 "[Service]\nType=oneshot\nExecStart=/bin/false\n")  # fmt: skip
    layers.enable(layer, "broken.service")
    (layer / "home/cli/.gemini").mkdir(parents=True, mode=0o755)
    (layer / "home/cli/.gemini").chmod(0o755)
    report = await validate(NspawnBackend(state_root), golden, ALL_CLIS, layers=[layer])
    failed = {c.name: c.evidence for c in report.checks if not c.ok}
    assert failed == {
        "/home/cli/.gemini is private to the CLI user":
            "owned by root, expected cli; mode 0755 lets others in; expected 0700",
        "systemctl is-system-running is 'running' with no failed units":
            "state=degraded; failed units: broken.service",
    }  # fmt: skip


async def test_an_image_that_never_gets_ready_reports_the_evidence(
    golden: Path, state_root: Path, layer: Path
) -> None:
    layers.agent_syntax_error(layer)
    report = await validate(NspawnBackend(state_root), golden, ALL_CLIS, layers=[layer])
    assert report.not_ready is not None and not report.ok
    assert report.not_ready.cause == "agent_crashed"
    assert report.checks == []


def test_the_command_prints_the_table_and_exits_zero(golden: Path) -> None:
    result = CliRunner().invoke(
        app, ["image", "validate", "--image", str(ensure_test_image().path)]
    )
    assert result.exit_code == 0, result.output
    assert "systemd is PID 1" in result.output
    assert "FAIL" not in result.output
