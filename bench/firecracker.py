"""Firecracker on this host: API configure, InstanceStart, snapshot create and load (p50/p99).

    .venv/bin/python bench/firecracker.py [--runs 10] [--memory 512]

Each run starts a firecracker process with the golden image's VM kernel and
disk, configures it (machine, boot source, 2 drives, vsock), InstanceStart,
pauses, writes a full snapshot, then loads it in a NEW firecracker process.
Times are wall-clock around each API call (plus the per-VM disk copy). Where
hostcheck finds hardware virtualization it also times cold boot vs restore
to AGENT_READY. A JSON line last. Numbers, not asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from stats import row

from remotecli.images import vm
from remotecli.images.build import build_image
from remotecli.images.recipe import BuildOptions
from remotecli.vmm import hostcheck
from remotecli.vmm.base import InstanceSpec, VmArtifacts
from remotecli.vmm.firecracker import binaries as fcbin
from remotecli.vmm.firecracker.backend import FirecrackerBackend


def _spec(rootfs: Path, name: str, memory: int) -> InstanceSpec:
    return InstanceSpec(
        image=rootfs, instance_id=f"{name}-{secrets.token_hex(3)}",
        agent_token=secrets.token_urlsafe(24), memory_mib=memory,
    )  # fmt: skip


async def main(runs: int, memory: int) -> None:
    image = await build_image(BuildOptions(test_clis=True))
    artifacts = await vm.ensure_vm_artifacts(image)

    async def arts(spec: InstanceSpec) -> VmArtifacts:
        return artifacts

    root = Path(tempfile.mkdtemp(prefix="fcb-"))
    backend = FirecrackerBackend(root / "s", artifacts=arts, vm_dir=root / "vm",
                                 firecracker=fcbin.require("firecracker"))  # fmt: skip
    samples: dict[str, list[float]] = {}
    try:
        for n in range(runs):
            golden = backend.create(_spec(image.rootfs, "g", memory))
            await golden.start()
            snap = await golden.create_snapshot(root / f"snap{n}")
            await golden.destroy()
            clone = backend.restore(_spec(image.rootfs, "c", memory), snap)
            t = time.monotonic()
            await clone.start()
            clone_total = time.monotonic() - t
            await clone.destroy()
            for key, value in golden.timings.items():
                samples.setdefault(key, []).append(value)
            for key, value in clone.timings.items():
                samples.setdefault(f"restore {key}", []).append(value)
            samples.setdefault("restore: spawn→loaded", []).append(clone_total)
            shutil.rmtree(snap.directory)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    disk_mib = artifacts.disk.stat().st_size >> 20
    print(
        f"\nFirecracker {fcbin.VERSION}, {memory} MiB guest, {disk_mib} MiB sparse disk, "
        f"{runs} runs"
    )
    print(f"  {'step':<28} {'p50 ms':>9} {'p99 ms':>9}")
    steps = {key: row(key, [v * 1000 for v in values], 28) for key, values in samples.items()}
    out: dict[str, Any] = {
        "bench": "firecracker", "version": fcbin.VERSION, "memory_mib_guest": memory,
        "steps": steps,
    }  # fmt: skip
    if not hostcheck.gather().kvm_usable:
        reason = "no hardware virtualization here"
        print(f"cold boot vs restore to AGENT_READY: skipped ({reason})")
        print(json.dumps({**out, "agent_ready": {"skipped": reason}}, ensure_ascii=False))
        return
    cold = backend.create(_spec(image.rootfs, "cold", memory))
    t = time.monotonic()
    await cold.start()
    await cold.wait_ready()
    boot = time.monotonic() - t
    snap = await cold.create_snapshot(root / "gold")
    await cold.destroy()
    clone = backend.restore(_spec(image.rootfs, "warm", memory), snap)
    t = time.monotonic()
    await clone.start()
    await clone.wait_ready()
    restore = time.monotonic() - t
    await clone.destroy()
    print(f"to AGENT_READY: cold boot {boot * 1000:.0f} ms, restore {restore * 1000:.0f} ms")
    ready = {"cold_ms": round(boot * 1000, 1), "restore_ms": round(restore * 1000, 1),
             "ratio": round(boot / restore, 1)}  # fmt: skip
    print(json.dumps({**out, "agent_ready": ready}, ensure_ascii=False))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--memory", type=int, default=512)
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.memory))
