"""The agent's HTTP contract: the seed's shapes, the token, and bad input.

Every refusal is a 4xx whose JSON body has a stable ``code`` and a human
``message``, and leaves nothing behind.
"""

from __future__ import annotations

import json
import socket
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from tests.support.agent_harness import RunningAgent, run_agent


def _error(response: httpx.Response, status: int, code: str) -> str:
    assert (status, code) == (response.status_code, response.json()["code"]), response.text
    message: str = response.json()["message"]
    assert message
    return message


def _files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


def test_health_has_the_seed_shape_without_a_token(agent: RunningAgent) -> None:
    response = agent.client(token=None).get("/health")
    assert response.status_code == 200
    body = response.json()
    assert {"status", "timestamp", "activeSessions"} <= set(body)
    assert (body["status"], body["activeSessions"]) == ("ok", 0)
    datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00"))


PRIVATE = [
    ("POST", "/auth/codex", {}),
    ("GET", "/oauth-url?sessionId=x", None),
    ("GET", "/credentials/status?sessionId=x", None),
    ("POST", "/credentials/write", {"provider": "codex", "files": []}),
    ("GET", "/credentials?provider=codex", None),
    ("GET", "/sessions", None),
    ("GET", "/sessions/x", None),
    ("POST", "/sessions/x/code", {"code": "a#b"}),
    ("DELETE", "/sessions/x", None),
    ("POST", "/prompts", {"provider": "codex", "prompt": "hi"}),
    ("GET", "/prompts", None),
    ("DELETE", "/prompts/x", None),
    ("GET", "/diagnostics", None),
]


@pytest.mark.parametrize(("method", "path", "body"), PRIVATE)
def test_every_endpoint_but_health_needs_the_vm_token(
    agent: RunningAgent, method: str, path: str, body: dict[str, object] | None
) -> None:
    missing = agent.client(token=None).request(method, path, json=body)
    _error(missing, 401, "token_required")
    wrong = agent.client(token="not-the-token-at-all").request(method, path, json=body)
    _error(wrong, 401, "invalid_token")
    assert agent.client().get("/health").json()["activeSessions"] == 0
    assert _files_under(agent.home) == []


def test_unknown_provider_is_refused(agent: RunningAgent) -> None:
    message = _error(agent.client().post("/auth/cursor", json={}), 400, "unknown_provider")
    assert "claude_code" in message


def test_unknown_login_mode_is_refused(agent: RunningAgent) -> None:
    response = agent.client().post("/auth/claude_code", json={"mode": "device_code"})
    _error(response, 400, "unsupported_login_mode")
    response = agent.client().post("/auth/codex", json={"mode": "telepathy"})
    _error(response, 400, "unsupported_login_mode")


def test_api_key_mode_needs_no_login_session(agent: RunningAgent) -> None:
    response = agent.client().post("/auth/gemini_cli", json={"mode": "api_key"})
    _error(response, 400, "api_key_mode_has_no_login")


@pytest.mark.parametrize(
    "path", ["/oauth-url?sessionId=nope", "/credentials/status?sessionId=nope", "/sessions/nope"]
)
def test_unknown_session_is_404(agent: RunningAgent, path: str) -> None:
    _error(agent.client().get(path), 404, "unknown_session")


def test_session_id_is_required(agent: RunningAgent) -> None:
    _error(agent.client().get("/oauth-url"), 400, "session_id_required")


def test_code_for_unknown_session_and_cancel_of_unknown_run(agent: RunningAgent) -> None:
    _error(agent.client().post("/sessions/nope/code", json={"code": "a#b"}), 404, "unknown_session")
    _error(agent.client().delete("/prompts/nope"), 404, "unknown_run")


def test_malformed_json_is_400(agent: RunningAgent) -> None:
    response = agent.client().post(
        "/credentials/write", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    _error(response, 400, "invalid_json")
    _error(agent.client().post("/credentials/write", json=[1, 2]), 400, "invalid_json")


def test_oversized_body_is_413_and_the_connection_survives_for_others(
    agent: RunningAgent,
) -> None:
    big = b"x" * (1024 * 1024 + 1)
    response = agent.client().post("/credentials/write", content=big)
    _error(response, 413, "body_too_large")
    assert agent.client().get("/health").status_code == 200


def test_unknown_route_and_wrong_method(agent: RunningAgent) -> None:
    _error(agent.client().get("/nothing-here"), 404, "not_found")
    _error(agent.client().put("/sessions"), 405, "method_not_allowed")


def test_garbage_on_the_socket_gets_a_json_400(agent: RunningAgent) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(str(agent.socket))
        sock.sendall(b"HELLO\r\n\r\n")
        reply = sock.recv(65536).decode()
    head, _, body = reply.partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 400")
    assert json.loads(body)["code"] == "bad_request_line"


@pytest.mark.parametrize(
    "path",
    [
        "../../etc/passwd",
        "/etc/passwd",
        ".codex/../../outside.json",
        ".ssh/authorized_keys",
        ".codex/config.toml",
    ],
)
def test_credential_writes_outside_the_providers_files_are_refused(
    agent: RunningAgent, path: str
) -> None:
    files = [
        {"path": ".codex/auth.json", "content": "{}"},  # valid, must not be written either
        {"path": path, "content": "pwned"},
    ]
    response = agent.client().post("/credentials/write", json={"provider": "codex", "files": files})
    _error(response, 400, "path_not_allowed")
    assert _files_under(agent.home) == []
    assert not (agent.home.parent / "outside.json").exists()


def test_credential_write_through_a_symlink_out_of_home_is_refused(
    agent: RunningAgent, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (agent.home / ".codex").symlink_to(outside)
    files = [{"path": ".codex/auth.json", "content": "{}"}]
    response = agent.client().post("/credentials/write", json={"provider": "codex", "files": files})
    _error(response, 400, "path_not_allowed")
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"files": [{"path": ".codex/auth.json", "content": "{}"}]}, "invalid_body"),
        ({"provider": "codex"}, "invalid_files"),
        ({"provider": "codex", "files": "x"}, "invalid_files"),
        ({"provider": "codex", "files": [{"path": ".codex/auth.json"}]}, "invalid_files"),
        (
            {
                "provider": "codex",
                "files": [{"path": ".codex/auth.json", "content": "!!", "encoding": "base64"}],
            },
            "invalid_files",
        ),
        ({"provider": "nope", "files": []}, "unknown_provider"),
    ],
)
def test_malformed_credential_writes_are_refused(
    agent: RunningAgent, body: dict[str, object], code: str
) -> None:
    _error(agent.client().post("/credentials/write", json=body), 400, code)
    assert _files_under(agent.home) == []


def test_credentials_round_trip_with_mode_version_and_seed_files(agent: RunningAgent) -> None:
    content = json.dumps({"claudeAiOauth": {"accessToken": "a", "refreshToken": "r"}})
    client = agent.client()
    written = client.post(
        "/credentials/write",
        json={"provider": "claude_code",
              "files": [{"path": ".claude/.credentials.json", "content": content}]},
    ).json()  # fmt: skip
    assert (written["written"], written["seeded"], written["complete"]) == (
        [".claude/.credentials.json"], [".claude.json"], True,
    )  # fmt: skip
    path = agent.home / ".claude/.credentials.json"
    assert (path.read_text(), path.stat().st_mode & 0o777) == (content, 0o600)
    assert json.loads((agent.home / ".claude.json").read_text()) == {"hasCompletedOnboarding": True}
    read = client.get("/credentials", params={"provider": "claude_code"}).json()
    assert read["version"] == written["version"]
    assert [(f["path"], f["content"], f["mode"]) for f in read["files"]] == [
        (".claude/.credentials.json", content, "0600")
    ]
    # Rewriting the same content keeps the version; new content changes it.
    again = client.post(
        "/credentials/write",
        json={"provider": "claude_code",
              "files": [{"path": ".claude/.credentials.json", "content": content + " "}]},
    ).json()  # fmt: skip
    assert again["version"] != written["version"]


def test_seed_files_keep_what_the_user_or_cli_wrote(agent: RunningAgent) -> None:
    (agent.home / ".claude.json").write_text(json.dumps({"theme": "dark"}))
    files = [{"path": ".claude/.credentials.json", "content": "{}"}]
    agent.client().post("/credentials/write", json={"provider": "claude_code", "files": files})
    assert json.loads((agent.home / ".claude.json").read_text()) == {
        "theme": "dark",
        "hasCompletedOnboarding": True,
    }


def test_prompt_without_credentials_says_to_log_in(agent: RunningAgent) -> None:
    response = agent.client().post("/prompts", json={"provider": "codex", "prompt": "hi"})
    _error(response, 400, "not_logged_in")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"provider": "codex"}, "invalid_body"),
        (
            {"provider": "codex", "prompt": "hi", "options": {"permission": "root"}},
            "invalid_option",
        ),
        ({"provider": "codex", "prompt": "hi", "options": {"colour": "red"}}, "invalid_option"),
        ({"provider": "codex", "prompt": "hi", "options": {"model": "a b; rm"}}, "invalid_option"),
        ({"provider": "codex", "prompt": "hi", "timeoutSeconds": -1}, "invalid_body"),
        ({"provider": "codex", "prompt": "hi", "apiKey": ""}, "invalid_body"),
    ],
)
def test_bad_prompt_requests_are_refused(
    agent: RunningAgent, body: dict[str, object], code: str
) -> None:
    _error(agent.client().post("/prompts", json=body), 400, code)
    assert agent.client().get("/prompts").json() == {"runs": []}


def test_a_missing_cli_is_named(tmp_path: Path) -> None:
    with run_agent(tmp_path, env={"PATH": "/nonexistent"}) as agent:
        response = agent.client().post("/auth/codex", json={})
        message = _error(response, 400, "cli_not_installed")
        assert "'codex'" in message
        assert agent.client().get("/sessions").json() == {"sessions": []}


def test_the_agent_refuses_to_start_without_a_token(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.support.agent_harness import copy_agent

    root = copy_agent(tmp_path / "image")
    result = subprocess.run(
        [sys.executable, "-S", "-E", "-m", "remotecli.agent", "--tcp", "off", "--vsock", "off"],
        cwd=root,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "--token-file" in result.stderr


def test_tcp_listener_serves_the_same_api(tmp_path: Path) -> None:
    with run_agent(tmp_path, tcp=True) as agent:
        assert agent.tcp_port
        response = httpx.get(f"http://127.0.0.1:{agent.tcp_port}/health", timeout=10)
        assert response.json()["status"] == "ok"
        denied = httpx.get(f"http://127.0.0.1:{agent.tcp_port}/sessions", timeout=10)
        assert denied.status_code == 401


def test_diagnostics_answer_the_seeds_checklist(agent: RunningAgent) -> None:
    (agent.home / ".codex").mkdir(mode=0o700)
    (agent.home / ".claude").mkdir(mode=0o755)
    body = agent.client().get("/diagnostics").json()
    # Outside systemd (this test) there is no unit to report; in an image there is.
    assert body["agentUnit"] is None
    assert body["python"].startswith("3.")
    versions = {c["provider"]: (c["installed"], c["version"], c["error"]) for c in body["clis"]}
    assert versions == {
        "claude_code": (True, "2.1.332 (Claude Code)", None),
        "codex": (True, "codex-cli 0.171.0", None),
        "gemini_cli": (True, "0.61.0", None),
    }
    dirs = {Path(d["path"]).name: (d["ok"], d["problem"]) for d in body["credentialDirs"]}
    assert dirs[".codex"] == (True, None)
    assert dirs[".claude"] == (False, "mode 0755 lets others in; expected 0700")
    assert dirs[".gemini"] == (False, "missing")
