"""Claude Code scenarios."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tools.capture_real_clis.capture import COLUMNS, Ctx, http_get, note_http, save, simple
from tools.capture_real_clis.child import Child
from tools.capture_real_clis.common import DNS_MODE, Json
from tools.capture_real_clis.fakes import FakeProviders
from tools.capture_real_clis.sandbox import listening_ports

CLAUDE_FAKE_HOSTS = ["platform.claude.com", "api.anthropic.com", "claude.ai", "claude.com"]
CLAUDE_FAKE_ORG = "00000000-fake-0000-0000-000000000001"
CLAUDE_FAKE_ACCOUNT = "00000000-fake-0000-0000-000000000002"


def claude_route(req: Json) -> tuple[int, Json | str] | None:
    if req["method"] == "POST" and req["path"] == "/v1/oauth/token":
        if req["body"].get("code") == "refused-code":
            return 400, {"error": "invalid_grant", "error_description": "fake: code refused"}
        return 200, {
            "token_type": "Bearer",
            "access_token": "sk-ant-oat01-FAKE-not-a-real-token",
            "refresh_token": "sk-ant-ort01-FAKE-not-a-real-token",
            "expires_in": 28800,
            "scope": "user:inference user:profile user:sessions:claude_code user:mcp_servers "
            "user:file_upload user:plugins",
            "organization": {"uuid": CLAUDE_FAKE_ORG, "name": "Fake Org"},
            "account": {"uuid": CLAUDE_FAKE_ACCOUNT, "email_address": "fake.user@example.invalid"},
        }
    if req["method"] == "GET" and req["path"] == "/api/oauth/profile":
        return 200, {
            "account": {
                "uuid": CLAUDE_FAKE_ACCOUNT,
                "email": "fake.user@example.invalid",
                "email_address": "fake.user@example.invalid",
                "full_name": "Fake User",
                "display_name": "Fake",
                "has_claude_max": True,
                "has_claude_pro": False,
                "created_at": "2026-01-01T00:00:00Z",
            },
            "organization": {
                "uuid": CLAUDE_FAKE_ORG,
                "name": "Fake Org",
                "organization_type": "claude_max",
                "billing_type": "stripe_subscription",
                "rate_limit_tier": "default_claude_max_20x",
                "has_extra_usage_enabled": False,
                "subscription_created_at": "2026-01-01T00:00:00Z",
            },
        }
    return None


def _claude_creds_shape(home: Path) -> Json:
    out: Json = {}
    for rel in (".claude/.credentials.json", ".claude.json"):
        path = home / rel
        if not path.exists():
            out[rel] = None
            continue
        try:
            data = json.loads(path.read_text())
        except ValueError:
            out[rel] = "<not json>"
            continue

        def shape(value: Any, key: str = "") -> Any:
            if isinstance(value, dict):
                return {k: shape(v, k) for k, v in value.items()}
            if isinstance(value, list):
                return [shape(v) for v in value][:12]
            if isinstance(value, str) and ("token" in key.lower() or value.startswith("sk-")):
                return f"<str:{len(value)}>"
            return value

        out[rel] = {"mode": oct(path.stat().st_mode & 0o777), "content": shape(data)}
    return out


def scenario_claude_tls_success(ctx: Ctx) -> None:
    """`claude auth login` against fake Anthropic hosts: success and a refused code."""
    for variant, paste_code in (("success", "fake-code"), ("refused", "refused-code")):
        name = f"claude_auth_login_fake_tls_{variant}_pty_80"
        home, work = ctx.sandbox(name)
        fake = FakeProviders(CLAUDE_FAKE_HOSTS, claude_route)
        env = ctx.env(
            home, {"CLAUDE_CODE_FULL_SIGN_IN_LINK": "1", "NODE_EXTRA_CA_CERTS": str(fake.ca)}
        )
        child = Child(ctx.argv("claude", "auth", "login"), env, work, cols=80, label="claude")
        info: Json = {"env": env, "cwd": str(work), "fake_hosts": CLAUDE_FAKE_HOSTS}
        try:
            out = child.expect(CLAUDE_PROMPT, 20)
            del out
            child.settle(0.7)
            state = re.search(rb"[?&]state=([A-Za-z0-9_-]+)", child.text())
            assert state
            child.send(paste_code.encode() + b"#" + state.group(1) + b"\r", note="code#state")
            facts = child.finish(exit_timeout=30)
        except TimeoutError:
            facts = child.finish()
        finally:
            fake.close()
        info["provider_requests"] = fake.requests
        info["files_after"] = _claude_creds_shape(home)
        save(name, child, facts, info)
        if variant == "success":
            for args, suffix in ((["auth", "status", "--json"], "_json"), (["auth", "status"], "")):
                st = Child(ctx.argv("claude", *args), env, work, mode="pipes", label="claude")
                st.close_stdin()
                save(
                    f"claude_auth_status{suffix}_logged_in_fake",
                    st,
                    st.finish(exit_timeout=20),
                    {"env": env},
                )


CLAUDE_PROMPT = rb"Paste code here if prompted > "


def _claude_login(ctx: Ctx, name: str, mode: str, cols: int, extra: Mapping[str, str]) -> None:
    home, work = ctx.sandbox(name)
    env = ctx.env(home, extra)
    before = set(listening_ports())
    child = Child(ctx.argv("claude", "auth", "login"), env, work, mode=mode, cols=cols)
    child.label = "claude"
    enter = b"\r" if mode == "pty" else b"\n"
    info: Json = {"env": env, "cwd": str(work)}
    try:
        child.expect(CLAUDE_PROMPT, 20)
        child.settle(0.7)
        info["prompt_seen_s"] = child.timeline.now()
        info["listening_while_waiting"] = sorted(set(listening_ports()) - before)
        cut = len(child.text())
        child.send(b"nohashhere" + enter, note="paste without #")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and CLAUDE_PROMPT not in child.text()[cut:]:
            time.sleep(0.05)
        child.settle(0.7)
        info["reprompted_after_no_hash"] = CLAUDE_PROMPT in child.text()[cut:]
        child.send(b"abc#def" + enter, note="paste code#state (fake)")
        facts = child.finish(exit_timeout=30)
    except TimeoutError:
        facts = child.finish()
    save(name, child, facts, info)


def scenario_claude_login(ctx: Ctx) -> None:
    for cols in COLUMNS:
        _claude_login(ctx, f"claude_auth_login_pty_{cols}", "pty", cols, {})
        _claude_login(
            ctx,
            f"claude_auth_login_full_link_pty_{cols}",
            "pty",
            cols,
            {"CLAUDE_CODE_FULL_SIGN_IN_LINK": "1"},
        )
    _claude_login(ctx, "claude_auth_login_pipes", "pipes", 0, {})
    _claude_login(
        ctx, "claude_auth_login_full_link_pipes", "pipes", 0, {"CLAUDE_CODE_FULL_SIGN_IN_LINK": "1"}
    )
    DNS_MODE["mode"] = "servfail"
    try:
        _claude_login(ctx, "claude_auth_login_dns_servfail_pty_80", "pty", 80, {})
    finally:
        DNS_MODE["mode"] = "nxdomain"


def scenario_claude_login_inputs(ctx: Ctx) -> None:
    """Other pastes, Ctrl-C, and closed stdin."""
    # 1. every kind of paste the CLI refuses locally, then a well-formed one
    for mode in ("pty", "pipes"):
        name = "claude_auth_login_paste_variants" + ("_pty_80" if mode == "pty" else "_pipes")
        home, work = ctx.sandbox(name)
        env = ctx.env(home)
        child = Child(ctx.argv("claude", "auth", "login"), env, work, mode=mode, label="claude")
        enter = b"\r" if mode == "pty" else b"\n"
        try:
            child.expect(CLAUDE_PROMPT, 20)
            child.settle(0.7)
            for paste, note in (
                (b"", "empty line"),
                (b"http://localhost:54545/callback?code=abc&state=def", "localhost URL"),
                (b"https://platform.claude.com/oauth/code/callback?code=abc", "web address"),
                (b"123456", "digits only"),
                (b"abc#", "code with empty state"),
                (b"abc#def", "well-formed code#state"),
            ):
                child.send(paste + enter, note=note)
                child.settle(0.7, timeout=10)
            facts = child.finish(exit_timeout=30)
        except TimeoutError:
            facts = child.finish()
        save(name, child, facts, {"env": env, "cwd": str(work)})

    # 2. Ctrl-C at the prompt (PTY)
    name = "claude_auth_login_ctrl_c_pty_80"
    home, work = ctx.sandbox(name)
    env = ctx.env(home)
    child = Child(ctx.argv("claude", "auth", "login"), env, work, label="claude")
    try:
        child.expect(CLAUDE_PROMPT, 20)
        child.settle(0.7)
        child.send(b"\x03", note="Ctrl-C")
        facts = child.finish(exit_timeout=10)
    except TimeoutError:
        facts = child.finish()
    save(name, child, facts, {"env": env, "cwd": str(work)})

    # 3. Ctrl-D at the prompt (PTY)
    name = "claude_auth_login_ctrl_d_pty_80"
    home, work = ctx.sandbox(name)
    env = ctx.env(home)
    child = Child(ctx.argv("claude", "auth", "login"), env, work, label="claude")
    try:
        child.expect(CLAUDE_PROMPT, 20)
        child.settle(0.7)
        child.send(b"\x04", note="Ctrl-D")
        facts = child.finish(exit_timeout=10)
    except TimeoutError:
        facts = child.finish()
    save(name, child, facts, {"env": env, "cwd": str(work)})

    # 4. pipes with stdin closed at once: does it wait or give up?
    name = "claude_auth_login_pipes_stdin_closed"
    home, work = ctx.sandbox(name)
    env = ctx.env(home)
    child = Child(ctx.argv("claude", "auth", "login"), env, work, mode="pipes", label="claude")
    child.close_stdin()
    facts = child.finish(exit_timeout=20)
    save(name, child, facts, {"env": env, "cwd": str(work)})


def scenario_claude_local_listener(ctx: Ctx) -> None:
    """What claude's unprinted loopback listener answers."""
    name = "claude_auth_login_listener_pty_80"
    home, work = ctx.sandbox(name)
    env = ctx.env(home, {"CLAUDE_CODE_FULL_SIGN_IN_LINK": "1"})
    before = set(listening_ports())
    child = Child(ctx.argv("claude", "auth", "login"), env, work, cols=1000, label="claude")
    http: list[Json] = []
    try:
        child.expect(CLAUDE_PROMPT, 20)
        child.settle(0.7)
        ports = sorted(set(listening_ports()) - before)
        for port in ports:
            for path in ("/", "/callback?code=abc&state=wrong"):
                http.append(http_get(path, port, timeout=5))
                note_http(child.timeline, http[-1])
        child.settle(1.0)
        alive = not child.exited.is_set()
        facts = child.finish(exit_timeout=0.5)
    except TimeoutError:
        ports, alive = [], False
        facts = child.finish()
    save(
        name,
        child,
        facts,
        {
            "env": env,
            "listening_while_waiting": ports,
            "http": http,
            "running_after_probes": alive,
            "columns_note": "run at 1000 columns",
        },
    )


def scenario_claude_basic(ctx: Ctx) -> None:
    simple(ctx, "claude_version", "claude", ["--version"])
    simple(ctx, "claude_auth_status_json", "claude", ["auth", "status", "--json"])
    simple(ctx, "claude_auth_status", "claude", ["auth", "status"])
    simple(ctx, "claude_auth_status_json_pty_80", "claude", ["auth", "status", "--json"], "pty")
    simple(
        ctx,
        "claude_p_stream_json",
        "claude",
        ["-p", "hi", "--output-format", "stream-json", "--verbose"],
        run_for=30,
    )
    simple(ctx, "claude_p_json", "claude", ["-p", "hi", "--output-format", "json"], run_for=30)
    simple(ctx, "claude_p_text", "claude", ["-p", "hi"], run_for=30)


GEMINI_SETTINGS: Json = {"security": {"auth": {"selectedType": "oauth-personal"}}}
