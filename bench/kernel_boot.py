"""Cold boot to AGENT_READY on the qemu backend: Debian's cloud kernel vs the micro kernel.

    .venv/bin/python bench/kernel_boot.py [--boots 3]

Builds (or reuses) the golden test image, its VM artifacts with each kernel
(the micro kernel is compiled first when not cached: ~7 min on 2 cores), then
boots each N times, alternating so that a busy host hurts both alike. Prints
the p50 of every phase per kernel, the ratio of the p50s to AGENT_READY, and,
last, one JSON line. Numbers, not asserts: run it on the host you care about
(under TCG a cold boot is ~20 s: keep --boots small).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from remotecli.images.build import build_image
from remotecli.images.recipe import BuildOptions
from remotecli.images.vm import VmArtifacts, ensure_vm_artifacts
from remotecli.vmm.base import InstanceSpec
from remotecli.vmm.qemu.backend import QemuBackend

KERNELS = ("cloud", "micro")


async def _boot(backend: QemuBackend, rootfs: Path, name: str) -> tuple[dict[str, float], float]:
    spec = InstanceSpec(image=rootfs, instance_id=f"bench-{name}-{secrets.token_hex(3)}",
                        agent_token=secrets.token_urlsafe(24))  # fmt: skip
    instance = backend.create(spec)
    t0 = time.monotonic()
    try:
        await instance.start()
        readiness = await instance.wait_ready()
        return readiness.durations(), time.monotonic() - t0
    finally:
        await instance.destroy()


def _summary(runs: list[tuple[dict[str, float], float]]) -> dict[str, Any]:
    phases = list(runs[0][0])
    out: dict[str, Any] = {
        phase: round(statistics.median(r[phase] for r, _ in runs if phase in r) * 1000, 1)
        for phase in phases
    }
    out["total"] = round(statistics.median(t for _, t in runs) * 1000, 1)
    return out


async def main(args: argparse.Namespace) -> None:
    image = await build_image(BuildOptions(test_clis=True))
    artifacts = {
        "cloud": await ensure_vm_artifacts(image),
        "micro": await ensure_vm_artifacts(image, microkernel=True),
    }
    runs: dict[str, list[tuple[dict[str, float], float]]] = {k: [] for k in KERNELS}
    with tempfile.TemporaryDirectory(prefix="rq-kb-") as tmp:
        backends = {}
        for kernel in KERNELS:
            chosen = artifacts[kernel]

            async def fixed(spec: InstanceSpec, chosen: VmArtifacts = chosen) -> VmArtifacts:
                return chosen

            backends[kernel] = QemuBackend(Path(tmp) / kernel, artifacts=fixed)
            (Path(tmp) / kernel).mkdir()
        accel = backends["cloud"].accel
        print(f"image {image.key}, -accel {accel}, {args.boots} cold boots per kernel")
        for n in range(args.boots):
            for kernel in KERNELS:
                phases, total = await _boot(backends[kernel], image.rootfs, f"{kernel}{n}")
                runs[kernel].append((phases, total))
                print(f"  {kernel:<6} #{n}: {total:6.2f} s  {phases}")
    summary = {k: _summary(v) for k, v in runs.items()}
    names = [p for p in summary["cloud"] if p != "total"]
    print(f"\n  {'p50 ms':<16} {'cloud':>9} {'micro':>9}")
    for phase in [*names, "total"]:
        print(f"  {phase:<16} {summary['cloud'].get(phase, 0):9.1f} "
              f"{summary['micro'].get(phase, 0):9.1f}")  # fmt: skip
    ratio = summary["cloud"]["total"] / summary["micro"]["total"]
    print(f"\ncloud / micro p50 to AGENT_READY: {ratio:.2f}x")
    print(json.dumps({
        "backend": "qemu", "accel": accel, "boots": args.boots,
        "kernels": {k: artifacts[k].kernel_version for k in KERNELS},
        "p50_ms": summary, "ratio_cloud_over_micro": round(ratio, 2),
    }))  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--boots", type=int, default=3)
    asyncio.run(main(parser.parse_args()))
