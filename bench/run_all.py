"""Every benchmark, sized for this host, then one table and one JSON document (`make bench`).

    .venv/bin/python bench/run_all.py [--only NAME,...] [--logins 100] [--prompts 30]
                                      [--nspawn-logins 20] [--qemu-logins 4] [--clicks 5]
                                      [--qemu-cold 2] [--qemu-restores 5] [--kernel-boot]
                                      [--database-url URL]
                                      [--output bench/results/latest.json]

Runs each script beside it as its own process (their output streams through),
keeps the JSON line each prints last, and skips with a reason what this host
cannot run (no QEMU, not root for nspawn, no /dev/kvm or Firecracker binary,
no hardware virtualization for Firecracker's boot-to-ready). A script that
fails is reported as failed with its exit code and output tail; the others
still run. The summary table and the document (host, date, every result)
are printed at the end, and the document is written to
``bench/results/latest.json`` (git-ignored). Numbers, not asserts: on a busy
host (2 cores, other jobs) expect noise; compare runs on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from remotecli.vmm import hostcheck
from remotecli.vmm.firecracker import binaries as fcbin

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
#: A script that runs longer than this is stuck (the biggest default run here takes ~5 min).
STEP_TIMEOUT = 1800


@dataclass(frozen=True)
class Step:
    name: str
    #: The script beside this file and its arguments, split on spaces.
    command: str
    #: None: this host can run it; else why not.
    skip: str | None


def _plan(args: argparse.Namespace, facts: hostcheck.HostFacts) -> list[Step]:
    qemu = None if shutil.which("qemu-system-x86_64") else "qemu-system-x86_64 is not installed"
    nspawn = (
        "the nspawn backend needs root" if not facts.root
        else None if shutil.which("systemd-nspawn") else "systemd-nspawn is not installed"
    )  # fmt: skip
    firecracker = (
        "no /dev/kvm: Firecracker needs KVM" if not facts.kvm_present
        else None if fcbin.find("firecracker") else "no firecracker binary (make install)"
    )  # fmt: skip
    # A guest boots to ready only with hardware virtualization (kvm-pvm is not enough).
    fc_ready = firecracker or (None if facts.kvm_usable else "no hardware virtualization here")
    kernel = None if args.kernel_boot else "opt-in (--kernel-boot): ~20 s a boot under TCG"
    a = args
    db = f" --database-url {a.database_url}" if a.database_url else ""
    return [
        Step("load_fake", f"load.py --logins {a.logins} --prompts {a.prompts}{db}", None),
        Step("load_nspawn", f"load.py --backend nspawn --logins {a.nspawn_logins} "
                            f"--prompts {a.nspawn_logins}{db}", nspawn),
        Step("load_qemu", f"load.py --backend qemu --logins {a.qemu_logins} "
                          f"--prompts {a.qemu_logins}{db}", qemu),
        Step("latency_fake", f"controller_latency.py -n {max(a.clicks, 10)}", None),
        Step("latency_nspawn", f"controller_latency.py --backend nspawn -n {a.clicks} "
                               "--no-prompt", nspawn),
        Step("latency_qemu", f"controller_latency.py --backend qemu -n {a.clicks} "
                             f"--cold {a.qemu_cold} --no-prompt", qemu),
        Step("latency_firecracker", f"controller_latency.py --backend firecracker -n {a.clicks} "
                                    f"--cold {a.qemu_cold} --no-prompt", fc_ready),
        Step("vm_start_qemu", f"vm_start.py --cold {a.qemu_cold} --restores {a.qemu_restores}",
             qemu),
        Step("nspawn_ready", "nspawn_ready.py --starts 5 --parallel 5", nspawn),
        Step("firecracker", "firecracker.py --runs 3", firecracker),
        Step("kernel_boot", "kernel_boot.py --boots 1", kernel or qemu),
    ]  # fmt: skip


def _run(step: Step) -> dict[str, Any]:
    """Run one script, its output streaming through; its last JSON line, or why there is none."""
    script, *rest = step.command.split()
    argv = [sys.executable, str(HERE / script), *rest]
    print(f"\n=== {step.name}: {step.command}", flush=True)
    t0 = time.monotonic()
    tail: list[str] = []
    with subprocess.Popen(
        argv, cwd=HERE.parent, stdout=subprocess.PIPE, text=True, bufsize=1
    ) as proc:
        assert proc.stdout is not None
        watchdog = threading.Timer(STEP_TIMEOUT, proc.kill)
        watchdog.start()
        try:
            for line in proc.stdout:
                print(line, end="", flush=True)
                tail = [*tail[-19:], line.rstrip("\n")]
            code = proc.wait()
        finally:
            watchdog.cancel()
    seconds = round(time.monotonic() - t0, 1)
    found: dict[str, Any] | None = None
    if tail and tail[-1].startswith("{"):
        try:
            found = json.loads(tail[-1])
        except ValueError:
            found = None
    if found is None:
        return {"failed": f"exit code {code}, no JSON line", "tail": tail[-8:], "seconds": seconds}
    found["seconds"] = seconds
    if code != 0:
        found["exit_code"] = code  # load.py exits 1 when a request failed: its errors say which
    return found


def _host(facts: hostcheck.HostFacts) -> dict[str, Any]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    virt = "vmx" in facts.cpu_flags or "svm" in facts.cpu_flags
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "cpus": os.cpu_count(),
        "cpu": model, "kernel": platform.release(), "python": platform.python_version(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "hardware_virtualization": virt, "kvm_pvm": facts.kvm_pvm,
        "load_average": os.getloadavg()[0],
    }  # fmt: skip


# -- the summary ----------------------------------------------------------------------------


def _get(doc: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if not isinstance(doc, dict) or key not in doc:
            return None
        doc = doc[key]
    return doc


def _ms(summary: Any) -> str:
    if not isinstance(summary, dict) or "p50_ms" not in summary:
        return str(summary.get("skipped", "-")) if isinstance(summary, dict) else "-"
    return f"p50 {summary['p50_ms']:.0f} / p99 {summary['p99_ms']:.0f} ms (n={summary['n']})"


def _why(result: dict[str, Any]) -> str:
    return str(result.get("skipped") or result.get("failed") or "-")


def summarize(results: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    add: Callable[[str, str], None] = lambda what, value: rows.append((what, value))  # noqa: E731
    for backend in ("fake", "nspawn", "qemu", "firecracker"):
        latency = results[f"latency_{backend}"]
        for way in ("warm", "restore", "cold"):
            found = _get(latency, "click_to_url", way)
            value = _ms(found) if found is not None else _why(latency)
            add(f"click→URL {backend} {way}", value)
    qemu = results["vm_start_qemu"]
    ratio = _get(qemu, "ratio_p50")
    add(
        "restore vs cold boot, qemu (to AGENT_READY)",
        f"{ratio}x (cold p50 {_get(qemu, 'cold', 'total', 'p50_ms')} ms, restore p50 "
        f"{_get(qemu, 'restore', 'total', 'p50_ms')} ms, -accel {_get(qemu, 'accel')})"
        if ratio
        else _why(qemu),
    )
    controller_ratio = _get(results["latency_qemu"], "ratio_cold_over_restore")
    if controller_ratio:
        add("restore vs cold, qemu (click→URL)", f"{controller_ratio}x")
    fc = results["firecracker"]
    ready = _get(fc, "agent_ready")
    add(
        "restore vs cold boot, firecracker",
        f"{ready['ratio']}x"
        if isinstance(ready, dict) and "ratio" in ready
        else f"skipped: {ready['skipped']}"
        if isinstance(ready, dict)
        else _why(fc),
    )
    add("restore vs cold boot, nspawn / fake", "no snapshots (a container / a host process)")
    prompt = _get(results["latency_fake"], "prompt")
    add(
        "prompt overhead, platform / CLI alone (fake)",
        f"{prompt['ratio_p50']}x (p50 {prompt['platform']['p50_ms']:.0f} vs "
        f"{prompt['direct']['p50_ms']:.0f} ms)"
        if prompt
        else _why(results["latency_fake"]),
    )
    for backend in ("fake", "nspawn", "qemu"):
        load = results[f"load_{backend}"]
        logins = _get(load, "logins")
        if not logins:
            add(f"logins at once, {backend}", _why(load))
            continue
        add(
            f"logins at once, {backend}",
            f"{logins['ok']}/{logins['requested']} in {logins['wall_s']} s = "
            f"{logins['per_s']} logins/s; total {_ms(logins['phases'].get('login total'))}",
        )
        for name, round_ in (_get(load, "prompts") or {}).items():
            add(
                f"prompt streams at once, {backend} ({name})",
                f"{round_['ok']}/{round_['streams']} = {round_['per_s']} prompts/s; "
                f"first text {_ms(round_['phases'].get('first text'))}",
            )
        add(
            f"errors, {backend} load",
            json.dumps(load.get("errors")) if load.get("error_count") else "none",
        )
    nspawn = results["nspawn_ready"]
    pss = _get(nspawn, "memory", "pss_mib")
    add("memory per idle VM, nspawn", f"{pss} MiB PSS" if pss else _why(nspawn))
    memory = _get(qemu, "memory")
    if memory:
        for kind in ("clone", "cold"):
            add(
                f"memory per idle VM, qemu {kind}",
                f"RSS {memory[kind].get('rss')} / PSS {memory[kind].get('pss')} MiB",
            )
    else:
        add("memory per idle VM, qemu", _why(qemu))
    kernel = results["kernel_boot"]
    if "ratio_cloud_over_micro" in kernel:
        add("cold boot cloud / micro kernel, qemu", f"{kernel['ratio_cloud_over_micro']}x")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated step names (default: all)")
    parser.add_argument("--logins", type=int, default=100, help="concurrent logins, fake backend")
    parser.add_argument("--prompts", type=int, default=30, help="concurrent prompts, fake backend")
    # 20: ~35 nspawn containers at once exhaust root's inotify instances (128 by default:
    # fs.inotify.max_user_instances), and other jobs' containers on the host hold some too
    # (a run at 25 here once lost one login to it).
    parser.add_argument("--nspawn-logins", type=int, default=20, help="and prompts, nspawn")
    parser.add_argument("--qemu-logins", type=int, default=4, help="and prompts, qemu (TCG)")
    parser.add_argument("--clicks", type=int, default=5, help="click→URL samples per way")
    parser.add_argument("--qemu-cold", type=int, default=2, help="qemu cold boots (~20 s each)")
    parser.add_argument("--qemu-restores", type=int, default=5)
    parser.add_argument("--output", type=Path, default=RESULTS / "latest.json")
    parser.add_argument("--database-url", help="the load runs' database (default: SQLite)")
    parser.add_argument("--kernel-boot", action="store_true", help="also cloud vs micro kernel")
    args = parser.parse_args()
    facts = hostcheck.gather()
    only = {name for name in args.only.split(",") if name}
    plan = _plan(args, facts)
    unknown = only - {step.name for step in plan}
    if unknown:
        parser.error(f"unknown step(s) {sorted(unknown)}; the steps: {[s.name for s in plan]}")
    results: dict[str, dict[str, Any]] = {}
    t0 = time.monotonic()
    for step in plan:
        if only and step.name not in only:
            results[step.name] = {"skipped": "not in --only"}
        elif step.skip:
            print(f"\n=== {step.name}: skipped ({step.skip})", flush=True)
            results[step.name] = {"skipped": step.skip}
        else:
            results[step.name] = _run(step)
    document = {
        "host": _host(facts), "wall_s": round(time.monotonic() - t0, 1),
        "summary": dict(summarize(results)), "results": results,
    }  # fmt: skip
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    host = document["host"]
    print(f"\n=== summary ({host['date']}, {host['cpus']} CPUs {host['cpu']}, "
          f"kernel {host['kernel']}, {document['wall_s']} s)")  # fmt: skip
    width = max(len(what) for what in document["summary"])
    for what, value in document["summary"].items():
        print(f"  {what:<{width}}  {value}")
    print(f"\nwritten to {args.output}")
    print(json.dumps(document, ensure_ascii=False))
    failed = [name for name, result in results.items() if "failed" in result]
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
