"""The image's inputs and keys, and the unit text: pure functions, no build, no root."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from remotecli.errors import ImageError
from remotecli.images import layout
from remotecli.images.recipe import (
    AGENT_PARTS,
    BaseInputs,
    BuildOptions,
    CliSpec,
    ImageInputs,
    hash_files,
    image_inputs,
    package_files,
)
from remotecli.images.unit import agent_unit


def _inputs(**changes: Any) -> ImageInputs:
    base = ImageInputs(
        base=BaseInputs("trixie", "http://deb.debian.org/debian"),
        extra_packages=(),
        agent_sha256="a" * 64,
        clis=(),
        test_clis=True,
        builder="b" * 16,
    )
    return dataclasses.replace(base, **changes)


def test_equal_inputs_give_the_same_key() -> None:
    assert _inputs().key() == _inputs().key()


@pytest.mark.parametrize(
    "change",
    [
        {"agent_sha256": "c" * 64},
        {"test_clis": False},
        {"builder": "d" * 16},
        {"extra_packages": ("strace",)},
        {"clis": (CliSpec("codex", "codex", "@openai/codex", "0.171.0"),)},
        {"clis": (CliSpec("codex", "codex", "@openai/codex", "0.172.0"),)},
        {"base": BaseInputs("forky", "http://deb.debian.org/debian")},
        {"base": BaseInputs("trixie", "http://deb.debian.org/debian", apt_packages=("nodejs",))},
    ],
)
def test_any_changed_input_gives_a_new_key(change: dict[str, Any]) -> None:
    assert _inputs().key() != _inputs(**change).key()


def test_the_agent_does_not_change_the_base_key() -> None:
    a, b = _inputs(), _inputs(agent_sha256="e" * 64)
    assert (a.base.key(), a.key() != b.key()) == (b.base.key(), True)


def test_the_key_covers_exactly_what_the_manifest_records() -> None:
    inputs = _inputs()
    recorded = inputs.to_json()
    assert recorded["agent_sha256"] == "a" * 64
    assert recorded["base"]["key"] == inputs.base.key()
    assert len(inputs.key()) == 16 and int(inputs.key(), 16) >= 0


def _tree(root: Path) -> Path:
    (root / "pkg" / "agent" / "__pycache__").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text("__version__ = '1'\n")
    (root / "pkg" / "agent" / "server.py").write_text("print('hi')\n")
    (root / "pkg" / "agent" / "__pycache__" / "server.cpython-313.pyc").write_bytes(b"\0")
    return root / "pkg"


def test_agent_hash_follows_content_and_ignores_bytecode(tmp_path: Path) -> None:
    pkg = _tree(tmp_path)
    files = package_files(pkg, ("__init__.py", "agent"))
    assert files == ["__init__.py", "agent/server.py"]
    before = hash_files(pkg, files)
    (pkg / "agent" / "__pycache__" / "other.cpython-313.pyc").write_bytes(b"\1")
    assert hash_files(pkg, package_files(pkg, ("__init__.py", "agent"))) == before
    (pkg / "agent" / "server.py").write_text("print('changed')\n")
    assert hash_files(pkg, files) != before


def test_agent_hash_sees_the_executable_bit(tmp_path: Path) -> None:
    pkg = _tree(tmp_path)
    files = package_files(pkg, ("agent",))
    before = hash_files(pkg, files)
    (pkg / "agent" / "server.py").chmod(0o755)
    assert hash_files(pkg, files) != before


def test_a_missing_part_is_an_image_error(tmp_path: Path) -> None:
    pkg = _tree(tmp_path)
    with pytest.raises(ImageError, match="providers is missing"):
        package_files(pkg, ("providers",))


def test_test_clis_adds_the_testbed_to_the_package_copy() -> None:
    real = image_inputs(BuildOptions())
    fake = image_inputs(BuildOptions(test_clis=True))
    assert (real.package_parts, fake.package_parts) == (AGENT_PARTS, (*AGENT_PARTS, "testbed"))
    assert real.agent_sha256 != fake.agent_sha256
    assert real.base.key() == fake.base.key()


def test_providers_map_to_their_pinned_npm_packages() -> None:
    specs = BuildOptions(providers=("gemini_cli", "codex")).cli_specs
    assert [(s.provider, s.executable, s.npm_spec) for s in specs] == [
        ("codex", "codex", "@openai/codex@0.171.0"),
        ("gemini_cli", "gemini", "@google/gemini-cli@0.61.0"),
    ]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"providers": ("codex",), "test_clis": True}, "either real CLIs"),
        ({"extra_packages": ("Bad Name",)}, "not a valid Debian package name"),
        ({"release": "../etc"}, "not a Debian codename"),
        ({"mirror": "ftp://example.org"}, "must be an http"),
        ({"providers": ("codex", "codex")}, "twice"),
    ],
)
def test_bad_options_are_refused_with_the_reason(options: dict[str, object], message: str) -> None:
    with pytest.raises(ImageError, match=message):
        BuildOptions(**options)  # type: ignore[arg-type]


def test_an_unknown_provider_names_the_known_ones() -> None:
    with pytest.raises(ImageError, match="claude_code, codex, gemini_cli"):
        _ = BuildOptions(providers=("cursor",)).cli_specs


def _directives(unit: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in unit.splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            out.setdefault(key, []).append(value)
    return out


def test_the_unit_waits_for_network_target_only() -> None:
    unit = agent_unit()
    d = _directives(unit)
    assert d["After"] == ["network.target"]
    assert "Wants" not in d and "Requires" not in d
    directives = [line for line in unit.splitlines() if not line.startswith("#")]
    assert [line for line in directives if "network-online" in line] == []


def test_the_unit_runs_the_agent_as_the_contract_says() -> None:
    d = _directives(agent_unit())
    assert d["ExecStart"] == [
        f"/usr/bin/python3 -m remotecli.agent --token-file {layout.TOKEN_FILE} "
        f"--unix {layout.AGENT_SOCKET} --run-as {layout.CLI_USER} $REMOTECLI_AGENT_ARGS"
    ]
    assert d["EnvironmentFile"] == [f"-{layout.AGENT_ENV_FILE}"]
    assert d["Environment"] == [
        f"PYTHONPATH={layout.PACKAGE_ROOT} PYTHONDONTWRITEBYTECODE=1",
        "REMOTECLI_AGENT_ARGS=",
    ]
    assert (d["StandardOutput"], d["StandardError"]) == (["journal+console"], ["journal+console"])
    assert (d["Restart"], d["RestartSec"], d["WantedBy"]) == (
        ["on-failure"], ["1"], ["multi-user.target"],
    )  # fmt: skip
