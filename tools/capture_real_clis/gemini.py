"""Gemini CLI scenarios."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tools.capture_real_clis.capture import COLUMNS, Ctx, save, simple
from tools.capture_real_clis.child import Child
from tools.capture_real_clis.claude import GEMINI_SETTINGS
from tools.capture_real_clis.common import Json
from tools.capture_real_clis.fakes import FakeProviders, fake_jwt

GEMINI_PROMPT = rb"Enter the authorization code: "
GEMINI_URL = rb"https://accounts\.google\.com/o/oauth2/v2/auth\?[^\s\x1b\x07]+"


def _gemini_home(home: Path, settings: Json, trusted: Path | None = None) -> None:
    gdir = home / ".gemini"
    gdir.mkdir(exist_ok=True)
    (gdir / "settings.json").write_text(json.dumps(settings) + "\n")
    if trusted is not None:
        (gdir / "trustedFolders.json").write_text(json.dumps({str(trusted): "TRUST_FOLDER"}) + "\n")


def _gemini_login(
    ctx: Ctx,
    name: str,
    cols: int,
    trust: str,
    codes: Sequence[bytes] = (b"wrongcode1", b"wrongcode2"),
    extra: Mapping[str, str] | None = None,
) -> Json:
    """trust: none | env | flag | settings | file."""
    home, work = ctx.sandbox(name)
    settings: Json = json.loads(json.dumps(GEMINI_SETTINGS))
    env_extra = {"NO_BROWSER": "true", **(extra or {})}
    args: list[str] = []
    if trust == "env":
        env_extra["GEMINI_CLI_TRUST_WORKSPACE"] = "true"
    elif trust == "flag":
        args.append("--skip-trust")
    elif trust == "settings":
        settings["security"]["folderTrust"] = {"enabled": False}
    _gemini_home(home, settings, work if trust == "file" else None)
    env = ctx.env(home, env_extra)
    child = Child(ctx.argv("gemini", *args), env, work, cols=cols, label="gemini")
    info: Json = {
        "env": env,
        "cwd": str(work),
        "trust_method": trust,
        "settings_json": settings,
        "trusted_folders_json": {str(work): "TRUST_FOLDER"} if trust == "file" else None,
    }
    try:
        seen = child.expect(GEMINI_PROMPT + b"|Do you trust", 30).group(0)
        child.settle(1.0)
        info["first_prompt"] = seen.decode()
        info["first_prompt_s"] = child.timeline.now()
        if seen != GEMINI_PROMPT:
            facts = child.finish(exit_timeout=0.2)
            return save(name, child, facts, info)
        urls = [m.group(0).decode() for m in re.finditer(GEMINI_URL, child.text())]
        for code in codes:
            cut = len(child.text())
            child.send(code + b"\r", note="wrong authorization code")
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not child.exited.is_set():
                if GEMINI_PROMPT in child.text()[cut:]:
                    break
                time.sleep(0.05)
            child.settle(1.0)
            urls += [m.group(0).decode() for m in re.finditer(GEMINI_URL, child.text()[cut:])]
        info["url_states"] = [re.sub(r".*[?&]state=([^&]+).*", r"\1", u) for u in urls]
        facts = child.finish(exit_timeout=20)
    except TimeoutError:
        facts = child.finish()
    return save(name, child, facts, info)


def scenario_gemini_login(ctx: Ctx) -> None:
    _gemini_login(ctx, "gemini_oauth_untrusted_pty_80", 80, "none")
    _gemini_login(ctx, "gemini_oauth_untrusted_pty_300", 300, "none")
    for cols in COLUMNS:
        _gemini_login(ctx, f"gemini_oauth_pty_{cols}", cols, "file")
    for trust in ("env", "flag", "settings"):
        _gemini_login(ctx, f"gemini_oauth_trust_{trust}_pty_80", 80, trust, codes=())
    _gemini_login(ctx, "gemini_oauth_empty_code_pty_80", 80, "file", codes=(b"", b""))
    _gemini_login(ctx, "gemini_oauth_ci_true_pty_80", 80, "file", codes=(), extra={"CI": "true"})
    _gemini_login(
        ctx, "gemini_oauth_ci_true_untrusted_pty_80", 80, "none", codes=(), extra={"CI": "true"}
    )


def _process_tree(pgid: int) -> list[str]:
    out = subprocess.run(
        ["ps", "-o", "pid,ppid,pgid,args", "-g", str(pgid)],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    ).stdout
    return [
        re.sub(r"/root/\.cache/remotecli/real-clis/[0-9a-f]+/", "<prefix>/", line)
        for line in out.splitlines()
    ]


def scenario_gemini_trust_prompt(ctx: Ctx) -> None:
    """A fresh home with no settings: the TUI (trust dialog, auth dialog)."""
    name = "gemini_fresh_home_tui_pty_80"
    home, work = ctx.sandbox(name)
    env = ctx.env(home, {"NO_BROWSER": "true"})
    child = Child(ctx.argv("gemini"), env, work, cols=80, label="gemini")
    info: Json = {"env": env, "cwd": str(work), "settings_json": None}
    try:
        child.expect(rb"Do you trust", 30)
        child.settle(1.5)
        info["trust_dialog_s"] = child.timeline.now()
        info["process_tree"] = _process_tree(child.proc.pid)
        child.send(b"\r", note="Enter on the highlighted (first) choice")
        child.settle(3.0, timeout=20)
        gdir = home / ".gemini"
        info["gemini_dir_after"] = {
            str(p.relative_to(gdir)): p.read_text()[:500]
            for p in sorted(gdir.rglob("*.json"))
            if p.is_file()
        }
        info["process_tree_after"] = _process_tree(child.proc.pid)
        facts = child.finish(exit_timeout=0.2)
    except TimeoutError:
        facts = child.finish()
    save(name, child, facts, info)


def scenario_gemini_sigterm(ctx: Ctx) -> None:
    """SIGTERM to only the top process vs the group, while waiting for the code."""
    for target in ("leader", "group"):
        name = f"gemini_oauth_sigterm_{target}_pty_80"
        home, work = ctx.sandbox(name)
        _gemini_home(home, GEMINI_SETTINGS, work)
        env = ctx.env(home, {"NO_BROWSER": "true"})
        child = Child(ctx.argv("gemini"), env, work, cols=80, label="gemini")
        info: Json = {"env": env, "cwd": str(work), "signal_target": target}
        try:
            child.expect(GEMINI_PROMPT, 30)
            child.settle(1.0)
            info["process_tree"] = _process_tree(child.proc.pid)
            child.timeline.add("signal", signal="SIGTERM", target=target)
            if target == "leader":
                os.kill(child.proc.pid, signal.SIGTERM)
            else:
                os.killpg(child.proc.pid, signal.SIGTERM)
            code = child.wait(5)
            info["exited_within_5s_of_sigterm"] = code is not None
            info["process_tree_after"] = _process_tree(child.proc.pid)
            facts = child.finish(exit_timeout=0.2)
        except TimeoutError:
            facts = child.finish()
        save(name, child, facts, info)


GEMINI_FAKE_HOSTS = [
    "oauth2.googleapis.com",
    "www.googleapis.com",
    "cloudcode-pa.googleapis.com",
]


def gemini_route(req: Json) -> tuple[int, Json | str] | None:
    host, path = req["host"], req["path"]
    if host == "oauth2.googleapis.com" and path == "/token":
        if req["body"].get("code") == "refused-code":
            return 400, {"error": "invalid_grant", "error_description": "Malformed auth code."}
        return 200, {
            "access_token": "ya29.FAKE-not-a-real-token",
            "expires_in": 3599,
            "refresh_token": "1//FAKE-not-a-real-token",
            "scope": "https://www.googleapis.com/auth/cloud-platform "
            "https://www.googleapis.com/auth/userinfo.email "
            "https://www.googleapis.com/auth/userinfo.profile openid",
            "token_type": "Bearer",
            "id_token": fake_jwt(
                {"iss": "https://accounts.google.com", "sub": "000000000000000000000",
                 "email": "fake.user@example.invalid", "email_verified": True,
                 "iat": 1_800_000_000, "exp": 4_000_000_000}
            ),
        }  # fmt: skip
    if host == "www.googleapis.com" and path == "/oauth2/v2/userinfo":
        return 200, {
            "id": "000000000000000000000",
            "email": "fake.user@example.invalid",
            "verified_email": True,
            "name": "Fake User",
        }
    if host == "cloudcode-pa.googleapis.com" and path.endswith(":loadCodeAssist"):
        return 200, {
            "currentTier": {"id": "standard-tier", "name": "Gemini Code Assist Standard"},
            "allowedTiers": [{"id": "standard-tier", "isDefault": True}],
            "cloudaicompanionProject": "fake-project-000000",
        }
    if host == "cloudcode-pa.googleapis.com" and path.endswith(":retrieveUserQuota"):
        return 200, {"buckets": []}
    if host == "cloudcode-pa.googleapis.com" and path.endswith(":listExperiments"):
        return 200, {"experimentIds": [], "flags": []}
    return None


def _gemini_files_shape(home: Path) -> Json:
    out: Json = {}
    gdir = home / ".gemini"
    for path in sorted(gdir.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except ValueError:
            out[path.name] = "<not json>"
            continue

        def shape(value: Any, key: str = "") -> Any:
            if isinstance(value, dict):
                return {k: shape(v, k) for k, v in value.items()}
            if isinstance(value, str) and "token" in key:
                return f"<str:{len(value)}>"
            return value

        out[path.name] = {"mode": oct(path.stat().st_mode & 0o777), "content": shape(data)}
    return out


def scenario_gemini_tls_success(ctx: Ctx) -> None:
    """NO_BROWSER sign-in against fake Google hosts: a code that works, one refused."""
    for variant, code in (("success", b"fake-auth-code"), ("refused", b"refused-code")):
        name = f"gemini_oauth_fake_tls_{variant}_pty_80"
        home, work = ctx.sandbox(name)
        _gemini_home(home, GEMINI_SETTINGS, work)
        fake = FakeProviders(GEMINI_FAKE_HOSTS, gemini_route)
        env = ctx.env(home, {"NO_BROWSER": "true", "NODE_EXTRA_CA_CERTS": str(fake.ca)})
        child = Child(ctx.argv("gemini"), env, work, cols=80, label="gemini")
        info: Json = {"env": env, "cwd": str(work), "fake_hosts": GEMINI_FAKE_HOSTS}
        try:
            child.expect(GEMINI_PROMPT, 30)
            child.settle(1.0)
            child.send(code + b"\r", note="authorization code")
            child.settle(3.0, timeout=20)
            info["files_after"] = _gemini_files_shape(home)
            info["process_tree"] = _process_tree(child.proc.pid)
            facts = child.finish(exit_timeout=2 if variant == "success" else 20)
        except TimeoutError:
            facts = child.finish()
        finally:
            fake.close()
        info["provider_requests"] = fake.requests
        save(name, child, facts, info)


def scenario_gemini_basic(ctx: Ctx) -> None:
    simple(ctx, "gemini_version", "gemini", ["--version"], run_for=30)

    def oauth(home: Path, work: Path) -> None:
        _gemini_home(home, GEMINI_SETTINGS)

    def oauth_trusted(home: Path, work: Path) -> None:
        _gemini_home(home, GEMINI_SETTINGS, work)

    simple(ctx, "gemini_p_stream_json_noauth", "gemini", ["-p", "hi", "-o", "stream-json"])
    simple(
        ctx,
        "gemini_p_stream_json_noauth_skip_trust",
        "gemini",
        ["-p", "hi", "-o", "stream-json", "--skip-trust"],
    )
    simple(
        ctx,
        "gemini_p_stream_json_oauth_untrusted",
        "gemini",
        ["-p", "hi", "-o", "stream-json"],
        setup=oauth,
        extra_env={"NO_BROWSER": "true"},
    )
    simple(
        ctx,
        "gemini_p_stream_json_oauth_trusted",
        "gemini",
        ["-p", "hi", "-o", "stream-json"],
        setup=oauth_trusted,
        extra_env={"NO_BROWSER": "true"},
    )
    simple(
        ctx,
        "gemini_p_stream_json_oauth_nocreds_browser",
        "gemini",
        ["-p", "hi", "-o", "stream-json", "--skip-trust"],
        setup=oauth,
    )
    simple(
        ctx,
        "gemini_p_stream_json_apikey_fake",
        "gemini",
        ["-p", "hi", "-o", "stream-json", "--skip-trust"],
        extra_env={"GEMINI_API_KEY": "not-a-real-key"},
        run_for=40,
    )
    simple(
        ctx,
        "gemini_p_stream_json_apikey_fake_untrusted",
        "gemini",
        ["-p", "hi", "-o", "stream-json"],
        extra_env={"GEMINI_API_KEY": "not-a-real-key"},
        run_for=40,
    )


def scenario_gemini_long(ctx: Ctx) -> None:
    """Does `gemini -p` ever give up without network? (kill after 240 s)"""
    simple(
        ctx,
        "gemini_p_stream_json_apikey_fake_240s",
        "gemini",
        ["-p", "hi", "-o", "stream-json", "--skip-trust"],
        extra_env={"GEMINI_API_KEY": "not-a-real-key"},
        run_for=240,
    )
