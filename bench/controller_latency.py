"""Click-to-URL (warm pool, snapshot restore, cold start); a prompt through the platform vs alone.

    .venv/bin/python bench/controller_latency.py [--backend fake|nspawn|qemu|firecracker]
                                                 [-n 10] [--cold N] [--no-prompt]

Runs the real controller (uvicorn in a thread, SQLite) in offline-demo mode:
the test bed is the provider and the CLIs are its fakes, so the numbers are
the platform's own overhead. Click-to-URL is the wall time of
``POST /api/auth/start`` (a Claude Code paste-code login) until the answer
with the login URL; each login is cancelled after. Three ways to get the VM:
the warm pool (one ready auth VM, refilled between clicks), a restore of the
golden snapshot (pool 0; backends with snapshots only) and a cold start
(pool 0, snapshots off). Every click's ``vmOrigin`` is checked against the
way being measured. The prompt: 'hello' with Codex (API-key mode) in a warm
CLI VM, vs the fake CLI run directly. Prints p50/p99 and ratios and, last,
one JSON line; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from serve import serve
from stats import row

from remotecli.controller.settings import Settings
from remotecli.testbed import fake_cli_bin_dir

#: What each way of getting a VM is called in the session's ``vmOrigin``.
ORIGIN = {"warm": "pool", "restore": "restore", "cold": "cold"}
WIDTH = 30


def _client(url: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=300)


def click_to_url(state: Path, backend: str, way: str, n: int) -> dict[str, Any]:
    """``n`` clicks with the VM from ``way`` (warm, restore, cold); their p50/p99 and origins."""
    settings = Settings(
        state_dir=state, backend=backend, demo=True,  # type: ignore[arg-type]
        warm_pool_auth=1 if way == "warm" else 0, snapshots=way != "cold",
    )  # fmt: skip
    times: list[float] = []
    claims: list[float] = []  # the server's own claimMs: the VM part of the click
    origins: Counter[str] = Counter()
    with serve(settings) as controller, _client(controller.url, controller.admin_token) as client:
        client.post("/api/users", json={"id": "bench"})
        status = client.get("/api/vms").json()
        if way == "restore":
            if not status["backend"]["snapshots"]:
                return {"skipped": f"the {backend} backend has no snapshots"}
            snapshot = _wait(client, "the golden snapshot", _snapshot_ready)
            if snapshot["state"] != "ready":
                return {"skipped": f"no golden snapshot: {snapshot.get('reason')}"}
        for _ in range(n):
            if way == "warm":
                _wait(client, "one ready auth VM in the warm pool", _pool_ready)
            t0 = time.monotonic()
            started = client.post(
                "/api/auth/start",
                json={"userId": "bench", "provider": "claude_code", "mode": "paste_code"},
            )
            elapsed = time.monotonic() - t0
            if started.status_code != 201:
                raise RuntimeError(f"POST /api/auth/start: {started.status_code} {started.text}")
            session = started.json()
            times.append(elapsed * 1000)
            claims.append(float(session["timings"]["claimMs"]))
            origins[session["vmOrigin"]] += 1
            client.delete(f"/api/auth/sessions/{session['id']}")
    summary: dict[str, Any] = row(f"{way} ({ORIGIN[way]})", times, WIDTH)
    summary["claim"] = row("  of which the VM claim", claims, WIDTH)
    summary["origins"] = dict(origins)
    if set(origins) != {ORIGIN[way]}:
        print(f"    note: the VMs came from {dict(origins)}, not only from {ORIGIN[way]}")
    return summary


def _snapshot_ready(status: dict[str, Any]) -> dict[str, Any] | None:
    snapshot: dict[str, Any] = status["snapshot"]
    return snapshot if snapshot["state"] in ("ready", "failed", "disabled") else None


def _pool_ready(status: dict[str, Any]) -> bool | None:
    ready = [vm for vm in status["vms"] if vm["role"] == "auth" and vm["state"] == "ready"]
    return True if ready else None


def _wait(client: httpx.Client, what: str, check: Any, seconds: float = 600.0) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check(client.get("/api/vms").json())
        if found is not None:
            return found
        time.sleep(0.05)
    raise RuntimeError(f"waited {seconds:.0f} s for {what}")


def prompt_ratio(state: Path, backend: str, n: int) -> tuple[list[float], list[float]]:
    settings = Settings(state_dir=state, backend=backend, demo=True, warm_pool_auth=0)  # type: ignore[arg-type]
    platform: list[float] = []
    with serve(settings) as controller, _client(controller.url, controller.admin_token) as client:
        client.post("/api/users", json={"id": "bench"})
        client.post(
            "/api/auth/start",
            json={
                "userId": "bench",
                "provider": "codex",
                "mode": "api_key",
                "apiKey": "test-bench",
            },
        )
        for i in range(n + 1):
            t0 = time.monotonic()
            with client.stream(
                "POST",
                "/api/prompts",
                json={"userId": "bench", "provider": "codex", "prompt": "hello"},
            ) as response:
                if response.status_code != 200:
                    raise RuntimeError(f"POST /api/prompts: {response.status_code}")
                for _ in response.iter_lines():
                    pass
            if i:  # the first run also boots the user's CLI VM
                platform.append((time.monotonic() - t0) * 1000)
    direct: list[float] = []
    home = Path(tempfile.mkdtemp(prefix="rcli-bench-home-"))
    # The agent's own PATH for its CLIs (not a developer shell's shims).
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "CODEX_API_KEY": "test-bench",
           "REMOTECLI_TESTBED_URL": "http://127.0.0.1:9"}  # fmt: skip
    argv = [str(fake_cli_bin_dir() / "codex"), "exec", "--json", "--skip-git-repo-check", "hello"]
    try:
        for _ in range(n):
            t0 = time.monotonic()
            subprocess.run(argv, env=env, capture_output=True, check=True, timeout=60)
            direct.append((time.monotonic() - t0) * 1000)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return platform, direct


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--backend", default="fake", choices=["fake", "nspawn", "qemu", "firecracker"]
    )
    parser.add_argument("-n", type=int, default=10, help="clicks (warm, restore) and prompts")
    parser.add_argument("--cold", type=int, default=None, help="cold clicks (default: -n)")
    parser.add_argument("--no-prompt", action="store_true", help="skip the prompt ratio")
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="rcli-bench-"))
    out: dict[str, Any] = {"bench": "controller_latency", "backend": args.backend}
    try:
        print(f"backend {args.backend}: click → login URL (POST /api/auth/start, wall)")
        print(f"  {'':<{WIDTH}} {'p50 ms':>9} {'p99 ms':>9}")
        # One state dir for the three: a golden snapshot is made once and reused.
        cold_n = args.n if args.cold is None else args.cold
        ways = {"warm": args.n, "restore": args.n, "cold": cold_n}
        clicks: dict[str, dict[str, Any]] = {}
        for way, n in ways.items():
            clicks[way] = click_to_url(state, args.backend, way, n)
            if "skipped" in clicks[way]:
                print(f"  {way:<{WIDTH}} skipped: {clicks[way]['skipped']}")
        out["click_to_url"] = clicks
        cold = clicks["cold"]["p50_ms"]
        for way in ("warm", "restore"):
            if "p50_ms" in clicks[way]:
                ratio = round(cold / clicks[way]["p50_ms"], 2)
                out[f"ratio_cold_over_{way}"] = ratio
                print(f"  ratio p50 cold / {way:<12} {ratio:.2f}x")
        if not args.no_prompt:
            print("prompt 'hello' with Codex (API-key mode), warm CLI VM")
            platform, direct = prompt_ratio(state / "prompt", args.backend, args.n)
            through = row("through the platform (SSE)", platform, WIDTH)
            alone = row("the CLI run directly", direct, WIDTH)
            ratio = round(through["p50_ms"] / alone["p50_ms"], 2)
            print(f"  ratio p50 platform / direct   {ratio:.2f}x")
            out["prompt"] = {"platform": through, "direct": alone, "ratio_p50": ratio}
    finally:
        shutil.rmtree(state, ignore_errors=True)
    print(json.dumps(out, ensure_ascii=False))


if __name__ == "__main__":
    main()
