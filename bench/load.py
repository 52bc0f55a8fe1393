"""Many logins, then many prompt streams, at once through the real controller on the test bed.

    .venv/bin/python bench/load.py [--backend fake|nspawn|qemu|firecracker] [--logins 100]
                                   [--prompts 30] [--pool 1] [--providers claude_code,gemini_cli]
                                   [--database-url URL]

Runs the real controller (uvicorn in a thread, every service) in offline-demo
mode: the test bed's OAuth server is the provider, the image's fake CLIs are
the CLIs. Users u1..uN each log in at the same moment (by default u1 with
Claude Code, u2 with Gemini CLI, and so on: both paste-code logins):
POST /api/auth/start → the login URL → the user signs in at the test bed
(its browser helper, a thread per user) → POST the pasted code → connected.
Then the first ``--prompts`` connected
users each stream one prompt at once, twice: the first round also boots each
user's CLI VM, the second finds it warm.

Codex is left out on purpose: its default login (localhost_callback) makes the
fake CLI listen on the host's port 1455 on the fake backend, so two at once
collide; that is the fake's limit, not the platform's.

Prints throughput (logins/s, prompts/s), p50/p99 per phase, the errors by
code (the goal is none) and, last, one JSON line. Numbers, not asserts; on a
busy 2-core host expect noise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from serve import serve
from stats import row

from remotecli.controller.settings import Settings
from remotecli.testbed import DEFAULT_USERS, BrowserError, login

PROVIDERS = ("claude_code", "gemini_cli")
USER, PASSWORD = next(iter(DEFAULT_USERS.items()))
#: Per request: a cold VM on a loaded 2-core host can take a while; nothing waits forever.
TIMEOUT = httpx.Timeout(300.0, connect=30.0)


@dataclass
class Record:
    """Durations (ms) per phase and errors by code, with one example message per code."""

    phases: dict[str, list[float]] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)
    origins: Counter[str] = field(default_factory=Counter)

    def add(self, phase: str, seconds: float) -> None:
        self.phases.setdefault(phase, []).append(seconds * 1000)

    def fail(self, step: str, code: str, message: str) -> None:
        key = f"{step}:{code}"
        self.errors[key] += 1
        self.examples.setdefault(key, message[:300])


async def _error_of(response: httpx.Response) -> tuple[str, str]:
    """The controller's stable ``code`` and ``message`` (secret-free by design), or the status."""
    await response.aread()
    try:
        body = response.json()
    except ValueError:
        return f"http_{response.status_code}", response.text[:300]
    if isinstance(body, dict) and isinstance(body.get("code"), str):
        return body["code"], str(body.get("message", ""))
    return f"http_{response.status_code}", response.text[:300]


async def one_login(
    client: httpx.AsyncClient, pool: ThreadPoolExecutor, user: str, provider: str, rec: Record
) -> bool:
    loop = asyncio.get_running_loop()
    body = {"userId": user, "provider": provider, "mode": "paste_code"}
    try:
        t0 = time.monotonic()
        started = await client.post("/api/auth/start", json=body)
        rec.add("click→URL (wall)", time.monotonic() - t0)
        if started.status_code != 201:
            rec.fail("start", *await _error_of(started))
            return False
        session = started.json()
        timings = session.get("timings") or {}
        for name, key in (("claim (VM ready)", "claimMs"), ("click→URL (server)", "urlMs")):
            if isinstance(timings.get(key), int | float):
                rec.phases.setdefault(name, []).append(float(timings[key]))
        rec.origins[str(session.get("vmOrigin"))] += 1
        t1 = time.monotonic()
        outcome = await loop.run_in_executor(pool, login, session["loginUrl"], USER, PASSWORD)
        rec.add("browser sign-in", time.monotonic() - t1)
        if outcome.pasted is None:
            rec.fail("browser", "no_code_shown", f"the {provider} page showed no code to paste")
            return False
        t2 = time.monotonic()
        done = await client.post(
            f"/api/auth/sessions/{session['id']}/code", json={"code": outcome.pasted}
        )
        rec.add("paste→connected", time.monotonic() - t2)
        if done.status_code != 200:
            rec.fail("paste", *await _error_of(done))
            return False
        final = done.json()
        if final["phase"] != "authenticated":
            error = final.get("error") or {}
            rec.fail("paste", f"phase_{final['phase']}", str(error.get("message", error))[:300])
            return False
        rec.add("login total", time.monotonic() - t0)
        return True
    except (httpx.HTTPError, BrowserError, OSError) as exc:
        # The browser step's messages are the provider page's words (no codes, no tokens).
        rec.fail("login", type(exc).__name__, str(exc))
        return False


async def one_prompt(client: httpx.AsyncClient, user: str, provider: str, rec: Record) -> bool:
    body = {"userId": user, "provider": provider, "prompt": "hello"}
    t0 = time.monotonic()
    first_event = first_text = None
    status = None
    try:
        async with client.stream("POST", "/api/prompts", json=body) as response:
            if response.status_code != 200:
                rec.fail("prompt", *await _error_of(response))
                return False
            event = None
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    event = line.removeprefix("event: ")
                    first_event = first_event or time.monotonic()
                elif line.startswith("data: ") and event == "text":
                    first_text = first_text or time.monotonic()
                elif line.startswith("data: ") and event == "done":
                    done = json.loads(line.removeprefix("data: "))
                    status = done.get("status")
                    if status != "succeeded":
                        error = done.get("error") or {}
                        code = error.get("code", status) if isinstance(error, dict) else status
                        rec.fail("prompt", f"done_{code}", json.dumps(error)[:300])
    except httpx.HTTPError as exc:
        rec.fail("prompt", type(exc).__name__, str(exc))
        return False
    if status is None:
        rec.fail("prompt", "no_done_event", "the stream ended without a done event")
        return False
    if first_event is not None:
        rec.add("first event", first_event - t0)
    if first_text is not None:
        rec.add("first text", first_text - t0)
    rec.add("total", time.monotonic() - t0)
    return status == "succeeded"


def _phases(rec: Record) -> dict[str, Any]:
    print(f"  {'':<22} {'p50 ms':>9} {'p99 ms':>9}")
    return {name: row(name, values, width=22) for name, values in rec.phases.items()}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    state = Path(tempfile.mkdtemp(prefix="rcli-load-"))
    settings = Settings(
        state_dir=state, backend=args.backend, demo=True, warm_pool_auth=args.pool,
        database_url=args.database_url,
    )  # fmt: skip
    providers = args.providers.split(",")
    users = [(f"u{n}", providers[(n - 1) % len(providers)]) for n in range(1, args.logins + 1)]
    try:
        return await _load(args, settings, users)
    finally:
        shutil.rmtree(state, ignore_errors=True)


async def _load(
    args: argparse.Namespace, settings: Settings, users: list[tuple[str, str]]
) -> dict[str, Any]:
    with serve(settings) as controller:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
        async with httpx.AsyncClient(
            base_url=controller.url, headers=controller.headers, timeout=TIMEOUT, limits=limits
        ) as client:
            for user, _ in users:
                made = await client.post("/api/users", json={"id": user})
                if made.status_code not in (201, 409):
                    raise RuntimeError(f"creating {user} failed: {made.status_code} {made.text}")
            if args.pool:
                await _wait_pool(client, args.pool)

            logins = Record()
            with ThreadPoolExecutor(max_workers=min(len(users), 64) or 1) as browsers:
                t0 = time.monotonic()
                oks = await asyncio.gather(
                    *(one_login(client, browsers, u, p, logins) for u, p in users)
                )
                login_wall = time.monotonic() - t0
            connected = [pair for pair, ok in zip(users, oks, strict=True) if ok]
            rate = len(connected) / login_wall
            print(
                f"\n{len(users)} logins at once on {args.backend} (warm pool {args.pool}): "
                f"{len(connected)} connected in {login_wall:.2f} s = {rate:.2f} logins/s; "
                f"VMs from {dict(logins.origins)}"
            )
            login_phases = _phases(logins)

            rounds: dict[str, Any] = {}
            prompt_errors: Counter[str] = Counter()
            examples: dict[str, str] = {}
            chosen = connected[: args.prompts]
            for name in ("first (boots the CLI VMs)", "warm CLI VMs"):
                if not chosen:
                    break
                rec = Record()
                t0 = time.monotonic()
                done = await asyncio.gather(*(one_prompt(client, u, p, rec) for u, p in chosen))
                wall = time.monotonic() - t0
                ok = sum(done)
                print(f"\n{len(chosen)} prompt streams at once, {name}: {ok} succeeded in "
                      f"{wall:.2f} s = {ok / wall:.2f} prompts/s")  # fmt: skip
                rounds[name.split(" ")[0]] = {
                    "streams": len(chosen), "ok": ok, "wall_s": round(wall, 2),
                    "per_s": round(ok / wall, 2), "phases": _phases(rec),
                }  # fmt: skip
                prompt_errors += rec.errors
                examples.update(rec.examples)

    errors = logins.errors + prompt_errors
    examples = {**logins.examples, **examples}
    if errors:
        print("\nerrors by code:")
        for code, count in errors.most_common():
            print(f"  {count:4d}  {code}: {examples[code]}")
    else:
        print("\nerrors: none")
    return {
        "bench": "load", "backend": args.backend, "pool": args.pool,
        "database": settings.resolved_database_url.split(":")[0],
        "logins": {
            "requested": len(users), "ok": len(connected), "wall_s": round(login_wall, 2),
            "per_s": round(len(connected) / login_wall, 2), "origins": dict(logins.origins),
            "phases": login_phases,
        },
        "prompts": rounds,
        "errors": dict(errors), "error_count": sum(errors.values()),
    }  # fmt: skip


async def _wait_pool(client: httpx.AsyncClient, size: int, seconds: float = 300.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        vms = (await client.get("/api/vms")).json()["vms"]
        if sum(1 for vm in vms if vm["role"] == "auth" and vm["state"] == "ready") >= size:
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"the warm pool did not fill ({size} ready auth VMs) within {seconds:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--backend", default="fake", choices=["fake", "nspawn", "qemu", "firecracker"]
    )
    parser.add_argument("--logins", type=int, default=100, help="users logging in at once")
    parser.add_argument("--prompts", type=int, default=30, help="prompt streams at once")
    parser.add_argument(
        "--providers", default=",".join(PROVIDERS),
        help="logins rotate over these (paste-code logins: claude_code, gemini_cli)",
    )  # fmt: skip
    parser.add_argument("--pool", type=int, default=1, help="warm auth VMs before the rush")
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temp dir")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    print(json.dumps(result, ensure_ascii=False))
    sys.exit(1 if result["error_count"] else 0)


if __name__ == "__main__":
    main()
