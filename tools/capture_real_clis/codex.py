"""Codex scenarios against the real CLI (offline)."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
from pathlib import Path
from typing import Any

from tools.capture_real_clis.capture import (
    COLUMNS,
    Ctx,
    http_get,
    note_http,
    save,
    simple,
    wait_port_free,
)
from tools.capture_real_clis.child import Child, Timeline
from tools.capture_real_clis.common import Json
from tools.capture_real_clis.sandbox import listening_ports

CODEX_URL = rb"https://auth\.openai\.com/oauth/authorize\?[^\s\x1b\x07]+"


def codex_env(ctx: Ctx, name: str) -> tuple[dict[str, str], Path]:
    home, work = ctx.sandbox(name)
    env = ctx.env(home, {"CODEX_HOME": str(home / ".codex")})
    (home / ".codex").mkdir()
    return env, work


def scenario_codex_basic(ctx: Ctx) -> None:
    simple(ctx, "codex_version", "codex", ["--version"])
    simple(ctx, "codex_login_status", "codex", ["login", "status"])
    simple(ctx, "codex_login_status_pty_80", "codex", ["login", "status"], mode="pty")
    simple(
        ctx,
        "codex_login_status_home_under_tmp",
        "codex",
        ["login", "status"],
        home_under=Path("/tmp/remotecli-capture"),
    )
    simple(ctx, "codex_login_device_auth_pty_80", "codex", ["login", "--device-auth"], mode="pty")
    simple(ctx, "codex_login_device_auth", "codex", ["login", "--device-auth"])
    simple(
        ctx,
        "codex_exec_json",
        "codex",
        ["exec", "--json", "--skip-git-repo-check", "hi"],
        run_for=8.0,
    )
    simple(
        ctx,
        "codex_exec_json_pty_80",
        "codex",
        ["exec", "--json", "--skip-git-repo-check", "hi"],
        mode="pty",
        run_for=8.0,
    )


def scenario_codex_exec_long(ctx: Ctx) -> None:
    """Does `codex exec` ever give up without network? (kill after 150 s)"""
    simple(
        ctx,
        "codex_exec_json_150s",
        "codex",
        ["exec", "--json", "--skip-git-repo-check", "hi"],
        run_for=150.0,
    )


def scenario_codex_exec_stdin(ctx: Ctx) -> None:
    """`codex exec` with a stdin pipe that stays open (never closed)."""
    name = "codex_exec_json_stdin_open"
    env, work = codex_env(ctx, name)
    argv = ctx.argv("codex", "exec", "--json", "--skip-git-repo-check", "hi")
    child = Child(argv, env, work, mode="pipes", label="codex")
    facts = child.finish(exit_timeout=8)
    save(name, child, facts, {"env": env, "cwd": str(work), "note": "stdin pipe left open"})

    name = "claude_p_stream_json_stdin_open"
    home, work = ctx.sandbox(name)
    env = ctx.env(home)
    argv = ctx.argv("claude", "-p", "hi", "--output-format", "stream-json", "--verbose")
    child = Child(argv, env, work, mode="pipes", label="claude")
    facts = child.finish(exit_timeout=10)
    save(name, child, facts, {"env": env, "cwd": str(work), "note": "stdin pipe left open"})

    name = "gemini_p_stream_json_stdin_open"
    home, work = ctx.sandbox(name)
    env = ctx.env(home, {"GEMINI_API_KEY": "not-a-real-key"})
    argv = ctx.argv("gemini", "-p", "hi", "-o", "stream-json", "--skip-trust")
    child = Child(argv, env, work, mode="pipes", label="gemini")
    facts = child.finish(exit_timeout=10)
    save(name, child, facts, {"env": env, "cwd": str(work), "note": "stdin pipe left open"})


def scenario_codex_api_key(ctx: Ctx) -> None:
    """`codex login --with-api-key` (fake key on stdin), then `codex login status`."""
    name = "codex_login_with_api_key_fake"
    env, work = codex_env(ctx, name)
    child = Child(ctx.argv("codex", "login", "--with-api-key"), env, work, mode="pipes")
    child.send(b"sk-fake-not-a-real-key-000000000000\n", note="fake API key")
    child.close_stdin()
    facts = child.finish(exit_timeout=15)
    auth = _auth_json_shape(Path(env["CODEX_HOME"]) / "auth.json")
    save(name, child, facts, {"env": env, "cwd": str(work), "auth_json": auth})
    status = Child(ctx.argv("codex", "login", "status"), env, work, mode="pipes")
    status.close_stdin()
    save("codex_login_status_api_key_fake", status, status.finish(exit_timeout=15), {"env": env})


def _codex_state(url: bytes) -> str:
    match = re.search(rb"[?&]state=([^&]+)", url)
    assert match, url
    return match.group(1).decode()


def scenario_codex_login(ctx: Ctx) -> None:
    """Browser login: URL, wrong-state callback, right-state callback."""
    for mode, cols in [("pty", c) for c in COLUMNS] + [("pipes", 0)]:
        name = f"codex_login_pty_{cols}" if mode == "pty" else "codex_login_pipes"
        env, work = codex_env(ctx, name)
        assert wait_port_free(1455)
        child = Child(ctx.argv("codex", "login"), env, work, mode=mode, cols=cols, label="codex")
        http: list[Json] = []
        try:
            url = child.expect(CODEX_URL, 15).group(0)
            child.settle(0.5)
            url_seen = child.timeline.now()
            ports = listening_ports()
            state = _codex_state(url)
            wrong = http_get("/auth/callback?code=abc&state=wrong", 1455)
            note_http(child.timeline, wrong)
            http.append(wrong)
            child.settle(0.7)
            running_after_wrong = not child.exited.is_set()
            right = http_get(f"/auth/callback?code=abc&state={state}", 1455)
            note_http(child.timeline, right)
            http.append(right)
            facts = child.finish(exit_timeout=20)
        except TimeoutError:
            facts = child.finish()
            url_seen, ports, running_after_wrong = -1, [], False
        save(
            name,
            child,
            facts,
            {
                "env": env,
                "cwd": str(work),
                "url_seen_s": url_seen,
                "listening_while_waiting": ports,
                "running_after_wrong_state": running_after_wrong,
                "http": http,
            },
        )
        assert wait_port_free(1455)


def scenario_codex_login_extra(ctx: Ctx) -> None:
    """Callback with error=access_denied; GET /cancel; a second concurrent login."""
    # 1. provider redirected with an error instead of a code
    name = "codex_login_callback_error_pty_80"
    env, work = codex_env(ctx, name)
    child = Child(ctx.argv("codex", "login"), env, work, cols=80, label="codex")
    url = child.expect(CODEX_URL, 15).group(0)
    child.settle(0.5)
    state = _codex_state(url)
    http = [
        http_get(
            f"/auth/callback?error=access_denied&error_description=User+cancelled&state={state}",
            1455,
        )
    ]
    note_http(child.timeline, http[0])
    facts = child.finish(exit_timeout=10)
    save(name, child, facts, {"env": env, "cwd": str(work), "http": http})
    assert wait_port_free(1455)

    # 1b. other paths on the listener
    name = "codex_login_other_paths_pty_80"
    env, work = codex_env(ctx, name)
    child = Child(ctx.argv("codex", "login"), env, work, cols=80, label="codex")
    child.expect(CODEX_URL, 15)
    child.settle(0.5)
    http = []
    for path in ("/", "/auth/callback", "/success", "/auth/callback?code=abc"):
        http.append(http_get(path, 1455))
        note_http(child.timeline, http[-1])
    child.settle(0.5)
    alive = not child.exited.is_set()
    facts = child.finish(exit_timeout=0.5)
    codex_home = Path(env["CODEX_HOME"])
    save(
        name,
        child,
        facts,
        {
            "env": env,
            "cwd": str(work),
            "http": http,
            "running_after_probes": alive,
            "codex_home_files_after": sorted(
                str(p.relative_to(codex_home)) for p in codex_home.rglob("*") if p.is_file()
            ),
        },
    )
    assert wait_port_free(1455)

    # 2. GET /cancel against a waiting login
    name = "codex_login_get_cancel_pty_80"
    env, work = codex_env(ctx, name)
    child = Child(ctx.argv("codex", "login"), env, work, cols=80, label="codex")
    child.expect(CODEX_URL, 15)
    child.settle(0.5)
    http = [http_get("/cancel", 1455)]
    note_http(child.timeline, http[0])
    facts = child.finish(exit_timeout=10)
    save(
        name,
        child,
        facts,
        {"env": env, "cwd": str(work), "http": http, "port_free_after": wait_port_free(1455, 3)},
    )
    assert wait_port_free(1455)

    # 3. a second `codex login` while the first still waits
    name = "codex_login_second_run"
    env, work = codex_env(ctx, name)
    timeline = Timeline()
    first = Child(ctx.argv("codex", "login"), env, work, cols=80, timeline=timeline, label="first")
    first.expect(CODEX_URL, 15)
    first.settle(0.5)
    env2, work2 = codex_env(ctx, name + "_b")
    second = Child(
        ctx.argv("codex", "login"), env2, work2, cols=80, timeline=timeline, label="second"
    )
    second_url = second.expect(CODEX_URL, 15).group(0)
    second.settle(0.7)
    first_code = first.wait(5)
    ports = listening_ports()
    right = http_get(f"/auth/callback?code=abc&state={_codex_state(second_url)}", 1455)
    note_http(timeline, right)
    facts1 = first.finish(exit_timeout=5)
    facts2 = second.finish(exit_timeout=15)
    save(
        name + "_first_pty_80",
        first,
        facts1,
        {"env": env, "exit_code_seen_while_second_ran": first_code},
    )
    save(
        name + "_second_pty_80",
        second,
        facts2,
        {"env": env2, "listening_while_second_waits": ports, "http": [right]},
    )
    assert wait_port_free(1455)

    # 4. port 1455 taken by something else (not a codex login server)
    name = "codex_login_port_busy_pty_80"
    env, work = codex_env(ctx, name)
    blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    blocker.bind(("127.0.0.1", 1455))
    blocker.listen(8)
    stop = threading.Event()
    seen_by_blocker: list[Json] = []
    t_start = time.monotonic()

    def serve_blocker() -> None:
        blocker.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = blocker.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(1)
                with contextlib.suppress(OSError):
                    req = conn.recv(4096)
                    seen_by_blocker.append(
                        {
                            "t": round(time.monotonic() - t_start, 3),
                            "request_line": req.split(b"\r\n", 1)[0].decode("latin-1"),
                        }
                    )
                    conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")

    server = threading.Thread(target=serve_blocker, daemon=True)
    server.start()
    try:
        child = Child(ctx.argv("codex", "login"), env, work, cols=80, label="codex")
        with contextlib.suppress(TimeoutError):
            child.expect(CODEX_URL, 20)
            child.settle(0.5)
        ports = listening_ports()
        facts = child.finish(exit_timeout=15)
    finally:
        stop.set()
        server.join(2)
        blocker.close()
    save(
        name,
        child,
        facts,
        {
            "env": env,
            "cwd": str(work),
            "listening_while_waiting": ports,
            "note": "127.0.0.1:1455 held by a plain HTTP server answering 404",
            "requests_received_by_port_1455_holder": seen_by_blocker,
        },
    )
    assert wait_port_free(1455) and wait_port_free(1457)


def _auth_json_shape(path: Path) -> Json | None:
    """auth.json with every string value replaced by its kind (all fake anyway)."""
    if not path.exists():
        return None

    def shape(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: v if k in ("auth_mode", "issuer", "client_id", "last_refresh") else shape(v)
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [shape(v) for v in value]
        if isinstance(value, str):
            return "<jwt>" if value.count(".") == 2 and len(value) > 40 else f"<str:{len(value)}>"
        return value

    return {
        "mode": oct(path.stat().st_mode & 0o777),
        "keys": shape(json.loads(path.read_text())),
    }
