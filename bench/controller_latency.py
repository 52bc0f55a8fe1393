"""Click-to-URL (warm pool vs cold start) and a prompt through the platform vs the CLI directly.

    .venv/bin/python bench/controller_latency.py [--backend fake|nspawn] [-n 10]

Runs the real controller (uvicorn in a thread, SQLite) in offline-demo mode:
the test bed is the provider and the CLIs are its fakes, so the numbers are
the platform's own overhead. Prints medians, p90s and ratios; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx
import uvicorn

from remotecli.controller.app import create_app
from remotecli.controller.settings import Settings
from remotecli.testbed import fake_cli_bin_dir


def _serve(settings: Settings) -> tuple[uvicorn.Server, str]:
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=0, log_level="warning")
    )
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    return server, f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"


def _stats(name: str, values: list[float]) -> float:
    ordered = sorted(values)
    p50 = statistics.median(ordered)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    print(f"  {name:<34} p50 {p50 * 1000:7.1f} ms   p90 {p90 * 1000:7.1f} ms   (n={len(values)})")
    return p50


def click_to_url(backend: str, pool: int, n: int) -> list[float]:
    state = Path(tempfile.mkdtemp(prefix="rcli-bench-"))
    settings = Settings(state_dir=state, backend=backend, demo=True, warm_pool_auth=pool)  # type: ignore[arg-type]
    server, url = _serve(settings)
    token = (state / "admin.token").read_text().strip()
    client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=120)
    client.post("/api/users", json={"id": "bench"})
    times = []
    try:
        for _ in range(n):
            if pool:
                _wait_pool(client, pool)
            t0 = time.monotonic()
            session = client.post(
                "/api/auth/start",
                json={"userId": "bench", "provider": "codex", "mode": "device_code"},
            ).json()
            times.append(time.monotonic() - t0)
            assert session.get("loginUrl"), session
            client.delete(f"/api/auth/sessions/{session['id']}")
    finally:
        client.close()
        server.should_exit = True
    return times


def _wait_pool(client: httpx.Client, size: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        vms = client.get("/api/vms").json()["vms"]
        if sum(1 for vm in vms if vm["role"] == "auth" and vm["state"] == "ready") >= size:
            return
        time.sleep(0.05)
    raise RuntimeError("the warm pool did not fill within 60 s")


def prompt_ratio(backend: str, n: int) -> tuple[list[float], list[float]]:
    state = Path(tempfile.mkdtemp(prefix="rcli-bench-"))
    settings = Settings(state_dir=state, backend=backend, demo=True, warm_pool_auth=0)  # type: ignore[arg-type]
    server, url = _serve(settings)
    token = (state / "admin.token").read_text().strip()
    client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=120)
    client.post("/api/users", json={"id": "bench"})
    client.post(
        "/api/auth/start",
        json={"userId": "bench", "provider": "codex", "mode": "api_key", "apiKey": "test-bench"},
    )
    platform: list[float] = []
    try:
        for i in range(n + 1):
            t0 = time.monotonic()
            with client.stream(
                "POST",
                "/api/prompts",
                json={"userId": "bench", "provider": "codex", "prompt": "hello"},
            ) as response:
                for _ in response.iter_lines():
                    pass
            if i:  # the first run also boots the user's CLI VM
                platform.append(time.monotonic() - t0)
    finally:
        client.close()
        server.should_exit = True
    direct: list[float] = []
    home = Path(tempfile.mkdtemp(prefix="rcli-bench-home-"))
    # The agent's own PATH for its CLIs (not a developer shell's shims).
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "CODEX_API_KEY": "test-bench",
           "REMOTECLI_TESTBED_URL": "http://127.0.0.1:9"}  # fmt: skip
    argv = [str(fake_cli_bin_dir() / "codex"), "exec", "--json", "--skip-git-repo-check", "hello"]
    for _ in range(n):
        t0 = time.monotonic()
        subprocess.run(argv, env=env, capture_output=True, check=True, timeout=60)
        direct.append(time.monotonic() - t0)
    return platform, direct


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--backend", default="fake", choices=["fake", "nspawn"])
    parser.add_argument("-n", type=int, default=10)
    args = parser.parse_args()
    print(f"backend: {args.backend}")
    print("click → login URL (POST /api/auth/start until the URL is in the answer)")
    warm = _stats("warm pool", click_to_url(args.backend, 1, args.n))
    cold = _stats("cold start (no pool)", click_to_url(args.backend, 0, args.n))
    print("  restore from snapshot             n/a: this backend has no snapshots")
    print(f"  ratio cold / warm                 {cold / warm:.2f}x")
    print("prompt 'hello' with Codex (API-key mode), warm CLI VM")
    platform, direct = prompt_ratio(args.backend, args.n)
    through = _stats("through the platform (SSE)", platform)
    alone = _stats("the CLI run directly", direct)
    print(f"  ratio platform / direct           {through / alone:.2f}x")


if __name__ == "__main__":
    main()
