"""Start-to-ready of the golden image on the nspawn backend, per phase, and memory per instance.

    .venv/bin/python bench/nspawn_ready.py [--starts 20] [--parallel 10]

Prints p50/p99 of each readiness phase over N sequential starts, the same
for N starts at once (``--parallel``), and the proportional memory (PSS) of
every process of one ready container. Numbers, not asserts: run it on the
host you care about.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import time
from pathlib import Path

from stats import phase_table

from remotecli.images.build import build_image
from remotecli.images.recipe import BuildOptions
from remotecli.vmm.base import InstanceSpec, Readiness
from remotecli.vmm.nspawn.backend import NspawnBackend, NspawnInstance


def _spec(rootfs: Path, n: int) -> InstanceSpec:
    return InstanceSpec(
        image=rootfs, instance_id=f"bench-{n}-{secrets.token_hex(3)}",
        agent_token=secrets.token_urlsafe(24),
    )  # fmt: skip


async def _one(backend: NspawnBackend, rootfs: Path, n: int) -> tuple[Readiness, float]:
    instance = backend.create(_spec(rootfs, n))
    t0 = time.monotonic()
    try:
        await instance.start()
        readiness = await instance.wait_ready()
        return readiness, time.monotonic() - t0
    finally:
        await instance.destroy()


def _pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _container_pss_mib(instance: NspawnInstance) -> tuple[float, int]:
    leader = instance.container_pid()
    assert leader is not None, "the container has no PID 1"
    pidns = Path(f"/proc/{leader}/ns/pid").readlink()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "ns" / "pid").readlink() == pidns:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return sum(_pss_kib(pid) for pid in pids) / 1024, len(pids)


async def main(args: argparse.Namespace) -> None:
    image = await build_image(BuildOptions(test_clis=True))
    backend = NspawnBackend()
    print(f"image {image.key} ({image.rootfs})")

    sequential = [await _one(backend, image.rootfs, n) for n in range(args.starts)]
    seq_summary = phase_table("sequential", sequential, "starts")

    t0 = time.monotonic()
    parallel = await asyncio.gather(
        *(_one(backend, image.rootfs, 1000 + n) for n in range(args.parallel))
    )
    wall = time.monotonic() - t0
    par_summary = phase_table(f"{args.parallel} at once", list(parallel), "starts")
    print(f"  all {args.parallel} ready and destroyed in {wall:.2f} s wall")

    instance = backend.create(_spec(image.rootfs, 9999))
    try:
        await instance.start()
        await instance.wait_ready()
        await asyncio.sleep(1.0)  # let boot-time work settle before measuring
        mib, count = _container_pss_mib(instance)
        print(f"\nmemory of one ready container: {mib:.1f} MiB PSS over {count} processes")
    finally:
        await instance.destroy()

    p50_seq = statistics.median(total for _, total in sequential)
    p50_par = statistics.median(total for _, total in parallel)
    print(f"ratio p50 start→ready, {args.parallel} at once vs one: {p50_par / p50_seq:.2f}x")
    print(json.dumps({
        "bench": "nspawn_ready", "backend": "nspawn", "sequential": seq_summary,
        "parallel": {"at_once": args.parallel, "wall_s": round(wall, 2), **par_summary},
        "memory": {"pss_mib": round(mib, 1), "processes": count},
        "ratio_parallel_over_sequential_p50": round(p50_par / p50_seq, 2),
    }, ensure_ascii=False))  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--starts", type=int, default=20)
    parser.add_argument("--parallel", type=int, default=10)
    asyncio.run(main(parser.parse_args()))
