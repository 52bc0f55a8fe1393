"""POST /api/prompts: the user's own CLI in their CLI VM, streamed as SSE, credentials kept live."""

from __future__ import annotations

import json
from typing import Any

import pytest

from remotecli.controller.db.models import RunStatus
from tests.support.controller import PROVIDERS, Controller
from tests.support.streams import names, only, text_of


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_prompt_streams_the_cli_events_as_sse(world: Controller, provider: str) -> None:
    user = world.add_user("ada")
    world.connect(user, provider)
    events = world.prompt(user, provider, "hello")
    kinds = names(events)
    assert kinds[0] == "run" and kinds[-1] == "done", kinds
    assert "session" in kinds and kinds.count("result") == 1
    assert text_of(events) == "You said: hello"
    run, done = only(events, "run"), only(events, "done")
    assert (done["runId"], done["status"], done["exitCode"]) == (run["runId"], "succeeded", 0)
    row = world.run_row(run["runId"])
    assert row is not None
    assert (row.status, row.exit_code, row.vm_id) == (RunStatus.SUCCEEDED, 0, run["vmId"])
    assert row.usage is not None and row.usage["outputTokens"] is not None
    # Nothing of the conversation is stored.
    assert "hello" not in json.dumps([row.error_message, row.usage])


def test_a_tool_run_streams_the_use_and_its_result(world: Controller) -> None:
    user = world.add_user("ada")
    world.connect(user, "codex")
    events = world.prompt(user, "codex", "please run a tool")
    use, result = only(events, "tool_use"), only(events, "tool_result")
    assert use["id"] == result["id"] and "hello" in result["output"]
    assert only(events, "done")["status"] == "succeeded"


def test_a_failing_cli_reports_exit_code_and_stderr(world: Controller) -> None:
    user = world.add_user("ada")
    world.connect(user, "claude_code")
    events = world.prompt(user, "claude_code", "fail: the model is on fire")
    errors = [d for n, d in events if n == "error"]
    assert errors and any("on fire" in json.dumps(e) for e in errors), events
    done = only(events, "done")
    assert done["status"] == "failed" and done["exitCode"] not in (0, None)
    row = world.run_row(done["runId"])
    assert row is not None and row.status == RunStatus.FAILED and row.exit_code == done["exitCode"]
    assert row.error_code == done["error"]["code"]


def test_without_credentials_the_answer_says_log_in(world: Controller) -> None:
    user = world.add_user("ada")
    body = {"userId": user, "provider": "codex", "prompt": "hello"}
    response = world.client("service").post("/api/prompts", json=body)
    assert (response.status_code, response.json()["code"]) == (409, "not_connected")
    assert "POST /api/auth/start" in response.json()["message"]


def test_api_key_mode_passes_the_key_and_takes_no_lease(world: Controller) -> None:
    user = world.add_user("ada")
    world.store_api_key(user, "gemini_cli", "test-key-123")
    events = world.prompt(user, "gemini_cli", "hi")
    assert text_of(events) == "You said: hi"
    assert only(events, "done")["status"] == "succeeded"
    assert world.lease(user, "gemini_cli") is None
    assert "test-key-123" not in json.dumps(events)


def test_only_callers_allowed_to_act_for_the_user_may_run(world: Controller) -> None:
    user, other = world.add_user("ada"), world.add_user("bob")
    world.connect(user, "codex")
    cases = [
        (None, 401, "token_required"),
        (world.user_token(other), 403, "forbidden_user"),
        (world.user_token(user), 200, None),
        (world.token("service"), 200, None),
    ]
    for token, status, code in cases:
        client = world.client(token)
        for path, body in [
            ("/api/prompts", {"userId": user, "provider": "codex", "prompt": "hi"}),
            ("/api/perspectives", {"userId": user, "providers": ["codex"], "prompt": "hi"}),
        ]:
            with client.stream("POST", path, json=body) as response:
                response.read()
                assert response.status_code == status, (path, response.text)
                if code is not None:
                    assert response.json()["code"] == code


def test_bad_input_is_refused_before_anything_starts(world: Controller) -> None:
    user = world.add_user("ada")
    bodies: list[dict[str, Any]] = [
        {"provider": "vim", "prompt": "hi"},
        {"provider": "codex", "prompt": ""},
        {"provider": "codex", "prompt": "hi", "options": {"permission": "root"}},
        {"provider": "codex", "prompt": "hi", "options": {"model": "a b"}},
        {"provider": "codex", "prompt": "hi", "timeoutSeconds": 0},
        {"provider": "codex", "prompt": "hi", "extra": 1},
        {"provider": "codex"},
    ]
    for body in bodies:
        response = world.client("service").post("/api/prompts", json={"userId": user, **body})
        assert (response.status_code, response.json()["code"]) == (422, "invalid_request"), body
    response = world.client("service").post(
        "/api/prompts", json={"userId": "no body", "provider": "codex", "prompt": "hi"}
    )
    assert response.status_code == 422
    assert world.cli_vms() == []
