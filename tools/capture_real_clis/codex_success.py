"""Codex logins that succeed, against the fake issuer and the faked provider host."""

from __future__ import annotations

from pathlib import Path

from tools.capture_real_clis.capture import Ctx, http_get, note_http, save, wait_port_free
from tools.capture_real_clis.child import Child
from tools.capture_real_clis.codex import CODEX_URL, _auth_json_shape, _codex_state, codex_env
from tools.capture_real_clis.common import Json
from tools.capture_real_clis.fakes import FAKE_CLAIMS, FakeIssuer, FakeProviders, fake_jwt


def scenario_codex_fake_issuer(ctx: Ctx) -> None:
    """The success paths, against a fake issuer on loopback."""
    # `codex login --experimental_issuer URL` (browser flow) still prints the
    # auth.openai.com URL in 0.171.0, so only the device flow can be faked.
    # 2. device flow
    for mode in ("pty", "pipes"):
        name = "codex_login_device_auth_fake_issuer" + ("_pty_80" if mode == "pty" else "")
        env, work = codex_env(ctx, name)
        issuer = FakeIssuer(pending_polls=2)
        argv = ctx.argv("codex", "login", "--device-auth", "--experimental_issuer", issuer.url)
        child = Child(argv, env, work, mode=mode, cols=80, label="codex")
        if mode == "pipes":
            child.close_stdin()
        try:
            facts = child.finish(exit_timeout=30)
        finally:
            issuer.close()
        save(
            name,
            child,
            facts,
            {
                "env": env,
                "cwd": str(work),
                "fake_issuer": issuer.url,
                "issuer_requests": issuer.requests,
                "auth_json": _auth_json_shape(Path(env["CODEX_HOME"]) / "auth.json"),
            },
        )
        if mode == "pipes":
            for args, suffix in ((["login", "status"], ""), (["login", "status"], "_pty_80")):
                status = Child(
                    ctx.argv("codex", *args),
                    env,
                    work,
                    mode="pty" if suffix else "pipes",
                    label="codex",
                )
                if not suffix:
                    status.close_stdin()
                sfacts = status.finish(exit_timeout=15)
                save(f"codex_login_status_logged_in_fake{suffix}", status, sfacts, {"env": env})


def scenario_codex_tls_success(ctx: Ctx) -> None:
    """Browser login completed against a fake auth.openai.com (token exchange succeeds)."""

    def route(req: Json) -> tuple[int, Json | str] | None:
        if req["method"] == "POST" and req["path"] == "/oauth/token":
            if req["body"].get("grant_type") == "authorization_code":
                return 200, {
                    "id_token": fake_jwt(FAKE_CLAIMS),
                    "access_token": fake_jwt({**FAKE_CLAIMS, "scp": ["openid"]}),
                    "refresh_token": "fake-refresh-token",
                    "token_type": "Bearer",
                    "expires_in": 3600,
                }
            return 400, {"error": "invalid_request", "error_description": "fake: no API key"}
        return None

    name = "codex_login_fake_tls_success_pty_80"
    env, work = codex_env(ctx, name)
    fake = FakeProviders(["auth.openai.com"], route)
    env["CODEX_CA_CERTIFICATE"] = str(fake.ca)
    child = Child(ctx.argv("codex", "login"), env, work, cols=80, label="codex")
    http: list[Json] = []
    info: Json = {"env": env, "cwd": str(work), "fake_hosts": ["auth.openai.com"]}
    try:
        url = child.expect(CODEX_URL, 15).group(0)
        child.settle(0.5)
        state = _codex_state(url)
        http.append(http_get(f"/auth/callback?code=fake-code&scope=openid&state={state}", 1455))
        note_http(child.timeline, http[-1])
        child.settle(1.5)
        info["running_after_callback"] = not child.exited.is_set()
        info["auth_json_after_callback"] = _auth_json_shape(Path(env["CODEX_HOME"]) / "auth.json")
        location = dict((k.lower(), v) for k, v in http[-1].get("headers", [])).get("location")
        if location:
            from urllib.parse import parse_qsl, urlsplit

            parts = urlsplit(location)
            info["redirect_location_shape"] = {
                "scheme_host_port_path": f"{parts.scheme}://{parts.netloc}{parts.path}",
                "query_keys": [k for k, _ in parse_qsl(parts.query, keep_blank_values=True)],
            }
            http.append(http_get(parts.path + "?" + parts.query, parts.port or 1455))
            note_http(child.timeline, http[-1])
        facts = child.finish(exit_timeout=10)
    except TimeoutError:
        facts = child.finish()
    finally:
        fake.close()
    for resp in http:  # the Location header carries the (fake) id_token: keep its shape only
        resp["headers"] = [
            [k, v.split("?")[0] + "?..." if k.lower() == "location" else v]
            for k, v in resp.get("headers", [])
        ]
    info["http"] = http
    info["provider_requests"] = fake.requests
    info["auth_json"] = _auth_json_shape(Path(env["CODEX_HOME"]) / "auth.json")
    save(name, child, facts, info)
    assert wait_port_free(1455)
