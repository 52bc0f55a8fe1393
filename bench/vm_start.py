"""Cold boot vs snapshot restore to AGENT_READY on the qemu backend, and memory per VM.

    .venv/bin/python bench/vm_start.py [--cold 3] [--restores 10]

Boots the golden test image cold N times (each phase timed), makes one golden
snapshot (save time, state and disk sizes), restores M clones from it
(VMM_STARTED, STATE_RESTORED, AGENT_READY incl. the identity refresh), and
measures the QEMU process of one ready cold VM and one ready clone (RSS and
PSS) and the cost of a qcow2 overlay. Prints a table and, last, one JSON line.
Under TCG (no VT-x/AMD-V) cold boots take ~20 s each: keep --cold small.
Numbers, not asserts: run it on the host you care about.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import tempfile
import time
from pathlib import Path

from stats import pct, phase_table

from remotecli.images.build import build_image
from remotecli.images.recipe import BuildOptions
from remotecli.images.vm import ensure_vm_artifacts
from remotecli.vmm.base import InstanceSpec, Readiness
from remotecli.vmm.qemu.backend import QemuBackend, QemuInstance, qemu_img_overlay


def _spec(rootfs: Path, name: str) -> InstanceSpec:
    return InstanceSpec(
        image=rootfs, instance_id=f"bench-{name}-{secrets.token_hex(3)}",
        agent_token=secrets.token_urlsafe(24),
    )  # fmt: skip


def _memory_mib(pid: int) -> dict[str, float]:
    found = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key = line.split(":")[0]
        if key in ("Rss", "Pss"):
            found[key.lower()] = round(int(line.split()[1]) / 1024, 1)
    return found


async def _ready(
    instance: QemuInstance, keep: bool = False
) -> tuple[Readiness, float, dict[str, float]]:
    t0 = time.monotonic()
    try:
        await instance.start()
        readiness = await instance.wait_ready()
        elapsed = time.monotonic() - t0
        memory = {}
        if keep:
            await asyncio.sleep(1.0)  # let the agent settle before measuring
            assert instance.pid is not None
            memory = _memory_mib(instance.pid)
        return readiness, elapsed, memory
    finally:
        await instance.destroy()


async def _overlay_cost(base: Path, runs: int = 20) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        times = []
        for n in range(runs):
            t0 = time.monotonic()
            await qemu_img_overlay(base, "raw", Path(tmp) / f"o{n}.qcow2")
            times.append(time.monotonic() - t0)
    return pct(times, 0.5)


async def main(args: argparse.Namespace) -> None:
    image = await build_image(BuildOptions(test_clis=True))
    artifacts = await ensure_vm_artifacts(image)
    with tempfile.TemporaryDirectory(prefix="rq-bench-") as tmp:
        backend = QemuBackend(Path(tmp) / "state")
        print(f"image {image.key}, kernel {artifacts.kernel_version}, -accel {backend.accel}")
        cold = []
        cold_memory: dict[str, float] = {}
        for n in range(args.cold):
            readiness, total, memory = await _ready(
                backend.create(_spec(image.rootfs, f"cold{n}")), keep=n == 0
            )
            cold.append((readiness, total))
            cold_memory = cold_memory or memory
        cold_summary = phase_table("cold boot", cold)

        t0 = time.monotonic()
        snapshot = await backend.create_snapshot(_spec(image.rootfs, "golden"), Path(tmp) / "snap")
        made = time.monotonic() - t0
        meta = snapshot.meta
        state_mib, disk_mib = meta["state_bytes"] / 2**20, meta["disk_bytes"] / 2**20
        print(
            f"\ngolden snapshot: made in {made:.1f} s (boot + save), "
            f"save {meta['save_seconds']:.2f} s, state {state_mib:.0f} MiB, disk {disk_mib:.1f} MiB"
        )

        restores = []
        clone_memory: dict[str, float] = {}
        for n in range(args.restores):
            clone = backend.restore(_spec(image.rootfs, f"clone{n}"), snapshot)
            readiness, total, memory = await _ready(clone, keep=n == 0)
            restores.append((readiness, total))
            clone_memory = clone_memory or memory
        restore_summary = phase_table("restore", restores)
        overlay = await _overlay_cost(artifacts.disk)

    ratio = cold_summary["total"]["p50_ms"] / restore_summary["total"]["p50_ms"]
    print(f"\nratio p50 cold / restore to AGENT_READY: {ratio:.1f}x")
    print(f"memory of the QEMU process (MiB): cold VM {cold_memory}, clone {clone_memory}")
    print(f"qcow2 overlay: qemu-img create p50 {overlay * 1000:.1f} ms")
    print(json.dumps({
        "backend": "qemu", "accel": backend.accel, "memory_mib_guest": 512,
        "cold": cold_summary, "restore": restore_summary, "ratio_p50": round(ratio, 1),
        "snapshot": {
            "save_s": meta["save_seconds"], "state_bytes": meta["state_bytes"],
            "disk_bytes": meta["disk_bytes"],
        },
        "memory": {"cold": cold_memory, "clone": clone_memory},
        "overlay_create_ms": round(overlay * 1000, 1),
    }))  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--cold", type=int, default=3)
    parser.add_argument("--restores", type=int, default=10)
    asyncio.run(main(parser.parse_args()))
