"""POST /identity on the real agent: a restored clone's new token, hostname and entropy."""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.agent_harness import RunningAgent, run_agent


def identity(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "token": secrets.token_urlsafe(32),
        "hostname": "rcli-clone-1",
        "entropy": base64.b64encode(os.urandom(64)).decode(),
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def test_identity_rotates_the_token_and_says_what_it_did_not_apply(agent: RunningAgent) -> None:
    golden = agent.client()
    body = identity()
    answer = golden.post("/identity", json=body)
    assert answer.status_code == 200, answer.text
    done = answer.json()
    assert done["applied"] == {"entropy": "mixed", "token": "rotated"}
    assert "--machine-identity" in done["skipped"]["hostname"]
    assert body["token"] not in answer.text and body["entropy"] not in answer.text
    # The golden token stops working at once; the new one works.
    refused = golden.get("/sessions")
    assert (refused.status_code, refused.json()["code"]) == (401, "invalid_token")
    assert agent.client(token=body["token"]).get("/sessions").status_code == 200
    secrets_in_log = [r for r in agent.log_path.read_text().splitlines() if body["token"] in r]
    assert secrets_in_log == []


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"token": "short"}, "invalid_token_value"),
        ({"token": "has a space in it, which no header keeps"}, "invalid_token_value"),
        ({"hostname": "Not_A_Label"}, "invalid_hostname"),
        ({"hostname": "a" * 64}, "invalid_hostname"),
        ({"entropy": base64.b64encode(b"x" * 8).decode()}, "invalid_entropy"),
        ({"entropy": "not base64!"}, "invalid_entropy"),
        ({"time": "noon"}, "invalid_body"),
        ({"mood": "happy"}, "invalid_body"),
    ],
)
def test_bad_identity_is_refused_and_changes_nothing(
    agent: RunningAgent, change: dict[str, Any], code: str
) -> None:
    client = agent.client()
    answer = client.post("/identity", json=identity(**change))
    assert (answer.status_code, answer.json()["code"]) == (400, code)
    assert client.get("/sessions").status_code == 200  # the old token still works


def test_identity_needs_the_current_token(agent: RunningAgent) -> None:
    answer = agent.client(token="wrong-token-0123456789").post("/identity", json=identity())
    assert answer.status_code == 401
    assert agent.client().get("/sessions").status_code == 200


def test_machine_identity_sets_the_hostname_and_writes_the_token_file(tmp_path: Path) -> None:
    # A private UTS namespace: the hostname change must not touch this machine.
    ours = os.uname().nodename
    with run_agent(
        tmp_path, extra_args=("--machine-identity",), wrapper=("unshare", "--uts", "--")
    ) as running:
        body = identity(hostname="rcli-clone-2")
        answer = running.client().post("/identity", json=body)
        assert answer.status_code == 200, answer.text
        done = answer.json()
        assert done["hostname"] == "rcli-clone-2"
        assert done["applied"]["entropy"] == "credited"
        assert done["skipped"] == {}
        token_file = tmp_path / "agent.token"
        assert token_file.read_text().strip() == body["token"]
        assert oct(token_file.stat().st_mode & 0o777) == "0o600"
        uts = subprocess.run(
            ["nsenter", "-t", str(running.proc.pid), "-u", "hostname"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert uts.stdout.strip() == "rcli-clone-2"
    assert os.uname().nodename == ours
