"""CodexStreamParser against `codex exec --json` runs (fixtures in tests/fixtures/streams/)."""

from __future__ import annotations

from pathlib import Path

from remotecli.providers.events import (
    Error,
    Event,
    Result,
    SessionStarted,
    StreamParser,
    TextDelta,
    ToolResult,
    ToolUse,
    Usage,
)
from remotecli.providers.stream import CodexStreamParser

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "streams"
OFFLINE = "stream disconnected before completion: failed to lookup address information: Name does not resolve"  # noqa: E501


def run(fixture: str, exit_code: int = 0, stderr: str = "") -> list[Event]:
    """Feed the fixture line by line (as the agent reads stdout), then finish."""
    parser: StreamParser = CodexStreamParser()
    events: list[Event] = []
    with (FIXTURES / fixture).open(encoding="utf-8", newline="") as lines:
        for line in lines:
            events += parser.feed(line.rstrip("\n"))
    return events + parser.finish(exit_code, stderr)


def test_text_run_gives_reasoning_message_and_usage() -> None:
    tid = "019a8f3c-5d2e-7b41-9c0a-3e4f5a6b7c8d"
    answer = "Hi! What would you like to work on?"
    expected: list[Event] = [
        SessionStarted(session_id=tid),
        TextDelta(
            text="**Answering a greeting**\n\nThe user says hi; reply briefly.", thinking=True
        ),
        TextDelta(text=answer),
        Result(
            text=answer,
            usage=Usage(input_tokens=7421, output_tokens=58, cached_input_tokens=6912),
            session_id=tid,
        ),
    ]
    assert expected == run("codex_text.jsonl")


def test_tool_run_announces_each_tool_once_and_reports_its_outcome() -> None:
    tid = "019a8f3c-aaaa-7b41-9c0a-000000000001"
    pytest_cmd = {"command": "bash -lc 'pytest -q'"}
    answer = "Fixed `add()` in src/calc.py; all 5 tests pass."
    expected: list[Event] = [
        SessionStarted(session_id=tid),
        TextDelta(text="I'll check the tests first."),
        ToolUse(id="item_1", name="command_execution", input=pytest_cmd),
        # exit_code 1: failed
        ToolResult(id="item_1", output="F....\n1 failed, 4 passed in 0.12s\n", is_error=True),
        # The todo list is not a tool. The first file change is announced by its
        # item.updated, the second only at completion.
        ToolUse(
            id="item_3",
            name="file_change",
            input={"changes": [{"path": "/home/user/work/src/calc.py", "kind": "update"}]},
        ),
        ToolResult(id="item_3", output="update /home/user/work/src/calc.py"),
        ToolUse(
            id="item_4",
            name="file_change",
            input={
                "changes": [
                    {"path": "/home/user/work/tests/test_new.py", "kind": "add"},
                    {"path": "/home/user/work/old.txt", "kind": "delete"},
                ]
            },
        ),
        ToolResult(
            id="item_4",
            output="add /home/user/work/tests/test_new.py\ndelete /home/user/work/old.txt",
        ),
        ToolUse(id="item_5", name="command_execution", input=pytest_cmd),
        ToolResult(id="item_5", output=".....\n5 passed in 0.10s\n"),
        ToolUse(id="item_6", name="mcp__docs__search", input={"query": "pytest fixtures"}),
        ToolResult(id="item_6", output="Fixtures are functions..."),
        ToolUse(id="item_7", name="mcp__docs__fetch", input={}),
        ToolResult(id="item_7", output="tool call timed out after 60s", is_error=True),
        ToolUse(id="item_8", name="web_search", input={"query": "pytest approx float comparison"}),
        ToolResult(id="item_8"),
        ToolUse(id="item_9", name="command_execution", input={"command": "rm -rf /"}),
        # declined by the sandbox policy: no exit code, still a failure
        ToolResult(id="item_9", is_error=True),
        TextDelta(text=answer),
        Result(
            text=answer,
            usage=Usage(input_tokens=40211, output_tokens=912, cached_input_tokens=35840),
            session_id=tid,
        ),
    ]
    assert expected == run("codex_tool.jsonl")


def test_refresh_token_reused_is_one_refresh_failed_error() -> None:
    # Codex says it twice (error, then turn.failed); the user needs it once.
    message = (
        "Your access token could not be refreshed because your refresh token was already "
        "used. Please log out and sign in again."
    )
    expected: list[Event] = [
        SessionStarted(session_id="019a8f3c-bbbb-7b41-9c0a-000000000002"),
        Error(message=message, code="refresh_failed"),
    ]
    assert expected == run("codex_refresh_failed.jsonl", exit_code=1, stderr="whatever")


def test_signed_out_401_is_auth_required() -> None:
    message = (
        "unexpected status 401 Unauthorized: Missing bearer or basic authentication in header, "
        "url: https://api.openai.com/v1/responses, request id: req_0123456789abcdef"
    )
    expected: list[Event] = [
        SessionStarted(session_id="019a8f3c-cccc-7b41-9c0a-000000000003"),
        Error(message=message, code="auth_required"),
    ]
    assert expected == run("codex_unauthorized.jsonl", exit_code=1)


def test_mid_stream_failure_after_retries_is_one_cli_error() -> None:
    url = "https://chatgpt.com/backend-api/codex/responses"
    failure = f"stream disconnected before completion: error sending request for url ({url})"
    expected: list[Event] = [
        SessionStarted(session_id="019a8f3c-dddd-7b41-9c0a-000000000004"),
        TextDelta(text="Running the build."),
        ToolUse(id="item_1", name="command_execution", input={"command": "bash -lc 'make'"}),
        Error(message=f"Reconnecting... 1/5 ({failure})", code="warning"),
        Error(message=failure, code="cli_error"),
    ]
    assert expected == run("codex_midstream_error.jsonl", exit_code=1)


def test_unknown_events_and_item_types_are_ignored_and_updates_never_print_text() -> None:
    parser = CodexStreamParser()
    events: list[Event] = []
    for line in (FIXTURES / "codex_unknown_events.jsonl").read_text().splitlines():
        events += parser.feed(line)
    tid = "019a8f3c-eeee-7b41-9c0a-000000000005"
    expected: list[Event] = [
        SessionStarted(session_id=tid),
        Error(
            message="model rerouted: gpt-5.5-codex -> gpt-5.4-codex (HighRiskCyberActivity)",
            code="warning",
        ),
        TextDelta(text="Partial answer, now whole."),
        Result(
            text="Partial answer, now whole.",
            usage=Usage(input_tokens=1200, output_tokens=40, cached_input_tokens=0),
            session_id=tid,
        ),
    ]
    assert expected == events
    assert list(parser.noise) == ["Reading additional input from stdin..."]


def _offline_events(tid: str, first_retry: int) -> list[Event]:
    return [
        SessionStarted(session_id=tid),
        *(
            Error(message=f"Reconnecting... {n}/5 ({OFFLINE})", code="warning")
            for n in range(first_retry, 6)
        ),
        Error(
            message=f"Falling back from WebSockets to HTTPS transport. {OFFLINE}",
            code="warning",
        ),
    ]


def test_real_offline_run_only_warns_until_killed() -> None:
    # Verbatim from codex 0.171.0 without network: it retries forever; the capture
    # killed it with SIGTERM after 8 s. Retries are warnings, so the kill is the error.
    stderr = (FIXTURES / "codex_real_offline.stderr").read_text()
    expected = [
        *_offline_events("01a2282a-83f8-7561-be33-3f3219f82046", first_retry=2),
        Error(
            message="codex was killed by signal 15",
            code="exit",
            exit_code=-15,
            stderr_tail=stderr,
        ),
    ]
    assert expected == run("codex_real_offline.jsonl", exit_code=-15, stderr=stderr)


def test_real_pty_output_mixing_crlf_and_ansi_log_lines_parses_the_same() -> None:
    # In a PTY stderr's coloured log lines land between the JSON lines, all CRLF.
    parser = CodexStreamParser()
    events: list[Event] = []
    with (FIXTURES / "codex_real_offline_pty.jsonl").open(encoding="utf-8", newline="") as f:
        for line in f:
            events += parser.feed(line.rstrip("\n"))
    assert _offline_events("01a2282a-a372-7402-b123-7e9af9d269ca", first_retry=2) == events
    assert len(parser.noise) == 7
    assert all("failed to connect to Responses WebSocket" in line for line in parser.noise)


def test_command_without_exit_code_but_completed_is_a_success() -> None:
    parser = CodexStreamParser()
    line = (
        '{"type":"item.completed","item":{"id":"i","type":"command_execution",'
        '"command":"true","aggregated_output":"","exit_code":null,"status":"completed"}}'
    )
    expected: list[Event] = [
        ToolUse(id="i", name="command_execution", input={"command": "true"}),
        ToolResult(id="i"),
    ]
    assert expected == parser.feed(line)


def test_result_text_is_the_last_agent_message_of_the_turn() -> None:
    parser = CodexStreamParser()
    for line in (
        '{"type":"turn.started"}',
        '{"type":"item.completed","item":{"id":"a","type":"agent_message","text":"first"}}',
        '{"type":"item.completed","item":{"id":"b","type":"agent_message","text":"second"}}',
    ):
        parser.feed(line)
    usage = '{"input_tokens":1,"cached_input_tokens":0,"output_tokens":2}'
    expected: list[Event] = [
        Result(
            text="second",
            usage=Usage(input_tokens=1, output_tokens=2, cached_input_tokens=0),
        )
    ]
    assert expected == parser.feed('{"type":"turn.completed","usage":' + usage + "}")
