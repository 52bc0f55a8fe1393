"""The capture context, saving captures and their sidecars, small HTTP helpers."""

from __future__ import annotations

import http.client
import json
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from tools.capture_real_clis.child import Child, Timeline
from tools.capture_real_clis.common import HERE, ROWS, SCRATCH, Json
from tools.capture_real_clis.sandbox import listening_ports

# --------------------------------------------------------------------------
# environment and saving
# --------------------------------------------------------------------------


class Ctx:
    def __init__(self, bins: Mapping[str, Path]) -> None:
        self.bins = bins
        self.bin_dir = next(iter(bins.values())).parent
        self.index: list[Json] = []

    def sandbox(self, name: str) -> tuple[Path, Path]:
        """Fresh HOME and working directory for one capture."""
        root = SCRATCH / name
        if root.exists():
            shutil.rmtree(root)
        home, work = root / "home", root / "work"
        home.mkdir(parents=True)
        work.mkdir()
        return home, work

    def env(self, home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {
            "PATH": f"{self.bin_dir}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(home),
            "USER": "root",
            "LOGNAME": "root",
            "SHELL": "/bin/bash",
            "TERM": "xterm-256color",
            "LANG": "C.UTF-8",
        }
        env.update(extra or {})
        return env

    def argv(self, cli: str, *args: str) -> list[str]:
        return [str(self.bins[cli]), *args]


def save(name: str, child: Child, facts: Json, extra: Json | None = None) -> Json:
    extra = dict(extra or {})
    _externalize_bodies(name, extra)
    files: list[str] = []
    for stream, data in child.streams.items():
        suffix = "raw" if stream == "pty" else stream
        path = HERE / f"{name}.{suffix}"
        path.write_bytes(bytes(data))
        files.append(path.name)
    argv = [Path(child.argv[0]).name, *child.argv[1:]]
    meta: Json = {
        "name": name,
        "argv": argv,
        "argv0_path": child.argv[0],
        "mode": child.mode,
        "columns": child.cols if child.mode == "pty" else None,
        "rows": ROWS if child.mode == "pty" else None,
        **facts,
        "files": files,
        "sizes": {stream: len(data) for stream, data in child.streams.items()},
        **extra,
        "timeline": child.timeline.events,
        "output_chunks_t_stream_bytes": (
            child.chunks if len(child.chunks) <= 300 else child.chunks[:150] + child.chunks[-150:]
        ),
        "listening_after": listening_ports(),
    }
    (HERE / f"{name}.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    print(
        f"  {name}: exit={facts.get('exit_code')} killed={facts.get('killed_by_capture')} "
        f"{facts.get('duration_s')}s {meta['sizes']}",
        flush=True,
    )
    return meta


def http_get(url_path: str, port: int, timeout: float = 10.0) -> Json:
    """GET http://127.0.0.1:<port><url_path>; return status, headers, body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    started = time.monotonic()
    try:
        conn.request("GET", url_path, headers={"Host": f"localhost:{port}"})
        resp = conn.getresponse()
        body = resp.read()
        return {
            "request": f"GET http://127.0.0.1:{port}{url_path}",
            "status": resp.status,
            "reason": resp.reason,
            "headers": [[k, v] for k, v in resp.getheaders()],
            "body": body.decode("utf-8", "replace"),
            "seconds": round(time.monotonic() - started, 3),
        }
    except OSError as exc:
        return {
            "request": f"GET http://127.0.0.1:{port}{url_path}",
            "error": f"{type(exc).__name__}: {exc}",
            "seconds": round(time.monotonic() - started, 3),
        }
    finally:
        conn.close()


def note_http(timeline: Timeline, resp: Json) -> None:
    timeline.add(
        "http", request=resp["request"], status=resp.get("status"), error=resp.get("error")
    )


def _externalize_bodies(name: str, extra: Json) -> None:
    """Write long HTTP bodies to their own files instead of the sidecar."""
    for i, resp in enumerate(extra.get("http") or []):
        body = resp.get("body")
        if isinstance(body, str) and len(body) > 300:
            ctype = dict((k.lower(), v) for k, v in resp.get("headers", [])).get("content-type", "")
            ext = "html" if "html" in ctype else "txt"
            path = HERE / f"{name}.http{i}.body.{ext}"
            path.write_text(body)
            resp["body"] = None
            resp["body_file"] = path.name
            resp["body_length"] = len(body.encode())


def wait_port_free(port: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port not in listening_ports():
            return True
        time.sleep(0.1)
    return False


def wait_port_listening(port: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port in listening_ports():
            return True
        time.sleep(0.05)
    return False


COLUMNS = (80, 300, 1000)


def simple(
    ctx: Ctx,
    name: str,
    cli: str,
    args: Sequence[str],
    mode: str = "pipes",
    cols: int = 80,
    run_for: float = 20.0,
    extra_env: Mapping[str, str] | None = None,
    home_under: Path | None = None,
    setup: Callable[[Path, Path], None] | None = None,
) -> Json:
    """Run a command to completion (or kill it after ``run_for`` seconds)."""
    home, work = ctx.sandbox(name)
    if home_under is not None:
        home = home_under / name / "home"
        if home.exists():
            shutil.rmtree(home)
        home.mkdir(parents=True)
    env = ctx.env(home, extra_env)
    if cli == "codex":
        env.setdefault("CODEX_HOME", str(home / ".codex"))
        Path(env["CODEX_HOME"]).mkdir(parents=True, exist_ok=True)
    if setup is not None:
        setup(home, work)
    child = Child(ctx.argv(cli, *args), env, work, mode=mode, cols=cols, label=cli)
    if mode == "pipes":
        child.close_stdin()
    facts = child.finish(exit_timeout=run_for)
    return save(name, child, facts, {"env": env, "cwd": str(work)})
