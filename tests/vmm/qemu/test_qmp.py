"""Our QMP client (``qemu.qmp`` underneath) against a real QEMU with no guest (``-M none``).

No boot: QEMU answers QMP within ~0.1 s. What is checked is the boundary:
the library's errors reach callers as ``QmpError`` (code ``qmp_error``) with
QEMU's own words, the command and its arguments.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from remotecli.vmm.qemu.backend import QEMU
from remotecli.vmm.qemu.qmp import CLOSED, QmpClient, QmpError

pytestmark = [pytest.mark.anyio]


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="rq-qmp-") as tmp:  # short: a Unix socket path
        yield Path(tmp)


@pytest.fixture
def qemu(socket_dir: Path) -> Iterator[subprocess.Popen[bytes]]:
    if shutil.which(QEMU) is None:
        pytest.skip(f"no {QEMU} on PATH (apt-get install qemu-system-x86)")
    argv = [QEMU, "-M", "none", "-nodefaults", "-no-user-config", "-display", "none",
            "-qmp", f"unix:{socket_dir / 'qmp.sock'},server=on,wait=off"]  # fmt: skip
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    try:
        yield process
    finally:
        process.kill()
        process.wait()


async def test_a_connection_reports_qemus_version_and_runs_commands(
    qemu: subprocess.Popen[bytes], socket_dir: Path
) -> None:
    client = QmpClient(socket_dir / "qmp.sock")
    waited = await client.connect(10.0, alive=lambda: qemu.poll() is None)
    try:
        assert waited < 10.0
        major, minor, micro = client.version.split(".")
        assert all(part.isdigit() for part in (major, minor, micro)), client.version
        status = await client.execute("query-status")
        assert status["status"] in ("running", "prelaunch")
    finally:
        await client.close()


async def test_a_refused_command_is_a_qmp_error_in_qemus_words(
    qemu: subprocess.Popen[bytes], socket_dir: Path
) -> None:
    client = QmpClient(socket_dir / "qmp.sock")
    await client.connect(10.0, alive=lambda: qemu.poll() is None)
    try:
        with pytest.raises(QmpError) as refused:
            await client.execute("migrate", {"uri": "bogus:x"})
    finally:
        await client.close()
    error = refused.value
    assert (error.code, error.command) == ("qmp_error", "migrate")
    assert error.error_class == "GenericError"
    assert error.arguments == {"uri": "bogus:x"}
    assert error.desc == "Parameter 'uri' expects a valid migration protocol"
    assert error.message == (
        'QMP migrate with {"uri": "bogus:x"} failed (GenericError): '
        "Parameter 'uri' expects a valid migration protocol"
    )
    assert error.to_dict()["errorClass"] == "GenericError"


async def test_after_qemu_exits_a_command_says_the_connection_closed(
    qemu: subprocess.Popen[bytes], socket_dir: Path
) -> None:
    client = QmpClient(socket_dir / "qmp.sock")
    await client.connect(10.0, alive=lambda: qemu.poll() is None)
    qemu.kill()
    qemu.wait()
    with pytest.raises(QmpError) as closed:
        await client.execute("query-status")
    assert (closed.value.command, closed.value.desc) == ("query-status", CLOSED)
    await client.close()
    await client.close()  # idempotent
    with pytest.raises(QmpError, match="QMP stop failed: not connected"):
        await client.execute("stop")


async def test_connect_waits_for_the_socket_and_says_why_it_gave_up(socket_dir: Path) -> None:
    client = QmpClient(socket_dir / "qmp.sock")
    with pytest.raises(QmpError) as late:
        await client.connect(0.2)
    assert late.value.desc == (
        f"{socket_dir / 'qmp.sock'} did not answer within 0.2 s (the socket does not exist yet)"
    )
    with pytest.raises(QmpError) as gone:
        await client.connect(5.0, alive=lambda: False)
    assert gone.value.desc == (
        "QEMU exited before its QMP socket answered (the socket does not exist yet)"
    )
