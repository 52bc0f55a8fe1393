"""One real boot of the VM artifacts under QEMU (TCG: no KVM on the CI hosts), -M microvm.

The config disk is attached first on the command line and the root disk second,
so the init must find each by content, not by name. The agent's listening line
appears only when it read its token from /run/agent, and ``/sessions``
answers 200 only to that token: together they show the config disk arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from remotecli.images import initramfs, layout
from remotecli.images.configdisk import write_config_disk
from remotecli.images.store import Image
from remotecli.images.vm import VmArtifacts, ensure_vm_artifacts
from remotecli.vmm.qemu.backend import host_tsc_khz
from tests.support.poll import NotYet, eventually

BOOT_TIMEOUT = 90.0
QEMU = "qemu-system-x86_64"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, token: str | None = None) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def qemu_argv(artifacts: VmArtifacts, config: Path, console: Path, port: int) -> list[str]:
    cmdline = f"{artifacts.cmdline} remotecli.net=10.0.2.15/24,10.0.2.2"
    # As the qemu backend does under TCG: without it the guest's PIT calibration
    # of the TSC misses its window on a busy host and the kernel hangs (~1 in 6).
    khz = host_tsc_khz()
    if khz:
        cmdline += f" tsc_early_khz={khz}"
    return [
        QEMU, "-accel", "tcg", "-M", "microvm,isa-serial=on,rtc=on", "-m", "512", "-smp", "1",
        "-nodefaults", "-no-reboot", "-display", "none", "-serial", f"file:{console}",
        "-kernel", str(artifacts.vmlinuz), "-initrd", str(artifacts.initrd),
        "-append", cmdline,
        "-drive", f"file={config},if=none,id=config,format=raw,readonly=on",
        "-device", "virtio-blk-device,drive=config",
        "-drive", f"file={artifacts.disk},if=none,id=root,format=raw,snapshot=on",
        "-device", "virtio-blk-device,drive=root",
        "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:{layout.AGENT_PORT}",
        "-device", "virtio-net-device,netdev=n0",
    ]  # fmt: skip


@pytest.mark.timeout(900)
def test_the_vm_boots_to_the_agent_with_the_config_disk_token(
    test_image: Image, tmp_path: Path
) -> None:
    if shutil.which(QEMU) is None:
        pytest.skip(f"{QEMU} is not installed (apt-get install qemu-system-x86)")
    artifacts = asyncio.run(ensure_vm_artifacts(test_image))
    token = secrets.token_urlsafe(24)
    config, console = tmp_path / "config.img", tmp_path / "console.log"
    write_config_disk(config, token=token, env={"REMOTECLI_AGENT_ARGS": "--vsock off"})
    port = _free_port()
    vm = subprocess.Popen(
        qemu_argv(artifacts, config, console, port),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    started = time.monotonic()
    text = ""
    try:

        def said_or_exited() -> bool:
            nonlocal text
            text = console.read_text(errors="replace") if console.exists() else ""
            said = layout.AGENT_LISTENING_MARKER in text or initramfs.FAILED_MARKER in text
            return said or vm.poll() is not None

        with contextlib.suppress(NotYet):  # the asserts below say what the console showed
            eventually("the boot to end", said_or_exited, BOOT_TIMEOUT, interval=0.2)
        listening = time.monotonic() - started
        assert initramfs.FAILED_MARKER not in text, text[-3000:]
        assert layout.AGENT_LISTENING_MARKER in text, (
            f"no listening line after {listening:.0f} s (qemu exit {vm.poll()}):\n{text[-3000:]}"
        )
        print(f"boot to agent.listening under TCG: {listening:.1f} s")

        init_lines = [ln for ln in text.splitlines() if ln.startswith(initramfs.CONSOLE_PREFIX)]
        assert any("config disk /dev/vda unpacked" in ln for ln in init_lines), init_lines
        assert any("root /dev/vdb mounted" in ln for ln in init_lines), init_lines
        assert init_lines[-1].startswith(initramfs.SWITCH_MARKER)
        assert any(marker in text for marker in layout.INIT_MARKERS)

        status, health = _get(f"http://127.0.0.1:{port}/health")
        assert (status, health["status"]) == (200, "ok")
        assert _get(f"http://127.0.0.1:{port}/sessions", token)[0] == 200
        assert _get(f"http://127.0.0.1:{port}/sessions", "wrong-token-" + "x" * 16)[0] == 401
    finally:
        with contextlib.suppress(ProcessLookupError):
            vm.send_signal(signal.SIGKILL)
        vm.wait(timeout=10)
        if vm.stderr is not None:
            vm.stderr.close()
