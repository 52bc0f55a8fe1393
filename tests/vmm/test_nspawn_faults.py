"""Each faulty variant of the image is a real boot that misses its deadline with the right hint.

The variants are small layers over the golden rootfs (tests/vmm/layers.py);
the deadlines are short (FAULT_DEADLINES) so a variant that can only be
caught by its deadline costs ~3 s.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from remotecli.errors import NotReady
from remotecli.images import layout
from remotecli.vmm.base import InstanceState, Phase
from tests.vmm import layers
from tests.vmm.lab import FAULT_DEADLINES, Lab

pytestmark = pytest.mark.anyio


@dataclass(frozen=True)
class Variant:
    name: str
    cause: str
    build: Callable[[Path, Path], object]  # (layer, golden rootfs) -> ...
    last_phase: Phase
    waiting_for: Phase
    hint_says: tuple[str, ...]


VARIANTS = [
    Variant(
        "wait-online", "network_online_blocked",
        lambda layer, _: layers.wait_online_blocks(layer),
        Phase.INIT_STARTED, Phase.AGENT_LISTENING,
        ("waits for network-online.target", "slow-wait-online.service holds that target",
         "still running", "After=network.target"),
    ),
    Variant(
        "networkd-wait-online", "network_online_blocked",
        lambda layer, _: layers.networkd_wait_online_blocks(layer),
        Phase.INIT_STARTED, Phase.AGENT_LISTENING,
        ("systemd-networkd-wait-online.service holds that target",),
    ),
    Variant(
        "syntax-error", "agent_crashed",
        lambda layer, _: layers.agent_syntax_error(layer),
        Phase.INIT_STARTED, Phase.AGENT_LISTENING,
        ("The agent crashed at start: SyntaxError: invalid syntax",
         'File "/opt/remotecli/remotecli/agent/app.py", line 3'),
    ),
    Variant(
        "not-enabled", "unit_not_enabled",
        lambda layer, rootfs: layers.not_enabled(layer, [rootfs]),
        Phase.INIT_STARTED, Phase.AGENT_LISTENING,
        (f"{layout.AGENT_UNIT} is not enabled (UnitFileState=disabled)",),
    ),
    Variant(
        "no-exec-start", "unit_exec_start_missing",
        lambda layer, _: layers.exec_start_missing(layer),
        Phase.INIT_STARTED, Phase.AGENT_LISTENING,
        ("it has no ExecStart=", "no-exec.conf"),
    ),
    Variant(
        "unit-broken", "unit_broken",
        lambda layer, _: layers.unit_file_broken(layer),
        Phase.INIT_STARTED, Phase.AGENT_LISTENING,
        ("its unit file has errors", "Unknown key 'ExecStrat'"),
    ),
    Variant(
        "no-init", "no_init",
        lambda layer, _: layers.no_init(layer),
        Phase.VMM_STARTED, Phase.INIT_STARTED,
        ("The image has no init", "execv(/usr/lib/systemd/systemd"),
    ),
    Variant(
        "port-taken", "port_in_use",
        lambda layer, _: layers.port_taken(layer),
        Phase.INIT_STARTED, Phase.AGENT_LISTENING,
        ("Port 8080 is already taken", "unit=port-hog.service", "Address already in use"),
    ),
    Variant(
        "token-missing", "token_missing",
        lambda layer, _: layers.token_missing(layer),
        Phase.INIT_STARTED, Phase.AGENT_LISTENING,
        ("cannot read the token file /run/agent/token", "hide-run.conf"),
    ),
    Variant(
        "hangs", "agent_silent",
        lambda layer, _: layers.agent_hangs(layer),
        Phase.INIT_STARTED, Phase.AGENT_LISTENING,
        ("never said it listens", "ExecStart: /bin/sleep infinity"),
    ),
]  # fmt: skip


@pytest.mark.parametrize("variant", VARIANTS, ids=[v.name for v in VARIANTS])
async def test_faulty_variant_is_diagnosed(
    variant: Variant, lab: Lab, layer: Path, golden: Path
) -> None:
    variant.build(layer, golden)
    instance = await lab.start(lab.spec(variant.name, layers=[layer], deadlines=FAULT_DEADLINES))

    with pytest.raises(NotReady) as caught:
        await instance.wait_ready()

    error = caught.value
    assert (variant.last_phase.value, variant.waiting_for.value) == (
        error.last_phase,
        error.waiting_for,
    )
    assert [p for p in variant.hint_says if p not in error.hint] == [], error.hint
    assert error.skipped == {"KERNEL_BOOTED": "a container shares the host kernel"}
    assert list(error.phases)[-1] == variant.last_phase.value
    assert (error.cause, error.to_dict()["cause"]) == (variant.cause, variant.cause)
    assert error.console_tail.strip(), "the error carries the console tail"
    assert "\x1b" not in error.console_tail
    if variant.last_phase is not Phase.VMM_STARTED:  # no container, no systemd to ask
        assert error.unit_state is not None and "$ systemctl show" in error.unit_state
    assert error.to_dict() == json.loads(json.dumps(error.to_dict()))
    assert instance.state == InstanceState.FAILED


async def test_network_online_ordering_alone_is_harmless(lab: Lab, layer: Path) -> None:
    """The seed's suspect: After=/Wants=network-online.target with no wait-online service."""
    layers.waits_for_network_online(layer)

    instance = await lab.boot("online-ok", layers=[layer])

    assert Phase.AGENT_READY in instance.readiness.reached
    assert "Reached target network-online.target." in instance.console_path.read_text()
