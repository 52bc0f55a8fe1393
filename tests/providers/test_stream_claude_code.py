"""ClaudeStreamParser against stream-json runs (fixtures in tests/fixtures/streams/)."""

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
from remotecli.providers.stream import ClaudeStreamParser

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "streams"
MODEL = "claude-sonnet-4-5-20250929"


def run(fixture: str, exit_code: int = 0, stderr: str = "") -> list[Event]:
    """Feed the fixture line by line (as the agent reads stdout), then finish."""
    parser: StreamParser = ClaudeStreamParser()
    events: list[Event] = []
    with (FIXTURES / fixture).open(encoding="utf-8", newline="") as lines:
        for line in lines:
            events += parser.feed(line.rstrip("\n"))
    return events + parser.finish(exit_code, stderr)


def test_text_run_gives_session_thinking_text_and_result() -> None:
    sid = "5b1f3c2e-8a41-4a8e-9d0e-2f6b7c1d9e01"
    answer = "Hello! How can I help you today?"
    expected: list[Event] = [
        SessionStarted(session_id=sid, model=MODEL),
        TextDelta(text="The user greets me; answer briefly.", thinking=True),
        TextDelta(text=answer),
        Result(
            text=answer,
            usage=Usage(input_tokens=3, output_tokens=12, cached_input_tokens=11876),
            cost_usd=0.0123,
            duration_ms=2417,
            session_id=sid,
            num_turns=1,
        ),
    ]
    assert expected == run("claude_code_text.jsonl")


def test_tool_run_pairs_uses_with_results_and_hides_subagent_prose() -> None:
    sid = "a7c4e1d2-0b3f-4e5a-8c6d-9e0f1a2b3c4d"
    answer = "The folder holds README.md and src; the README says it is a demo project."
    task_input = {
        "description": "Summarize README",
        "prompt": "Read README.md and summarize it in one line.",
        "subagent_type": "general-purpose",
    }
    expected: list[Event] = [
        SessionStarted(session_id=sid, model=MODEL),
        TextDelta(text="I'll look at the files first."),
        ToolUse(
            id="toolu_01Bash", name="Bash", input={"command": "ls", "description": "List files"}
        ),
        ToolResult(id="toolu_01Bash", output="README.md\nsrc"),
        ToolUse(id="toolu_02Read", name="Read", input={"file_path": "/home/user/work/missing.txt"}),
        ToolResult(
            id="toolu_02Read",
            output="<tool_use_error>File does not exist.</tool_use_error>",
            is_error=True,
        ),
        ToolUse(id="toolu_03Task", name="Task", input=task_input),
        # The sub-agent's prompt echo and its "Let me read it." are not shown;
        # its tool calls are.
        ToolUse(
            id="toolu_04SubRead", name="Read", input={"file_path": "/home/user/work/README.md"}
        ),
        ToolResult(id="toolu_04SubRead", output="     1\t# Demo\n     2\tA demo project."),
        # A list of text blocks is joined line by line.
        ToolResult(id="toolu_03Task", output="A demo project.\nagentId: a1b2c3 (for resuming)"),
        TextDelta(text=answer),
        Result(
            text=answer,
            usage=Usage(input_tokens=30, output_tokens=180, cached_input_tokens=48213),
            cost_usd=0.0871,
            duration_ms=15873,
            session_id=sid,
            num_turns=4,
        ),
    ]
    assert expected == run("claude_code_tool.jsonl")


def test_real_not_logged_in_run_is_one_auth_error_then_the_failed_result() -> None:
    # Verbatim from claude 2.1.332 without credentials (exit 1): the synthetic
    # assistant message with "error":"authentication_failed", then a result whose
    # text repeats it; the repeat is not a second error.
    sid = "e8428109-f7b4-4312-9e7d-29942981d843"
    text = "Not logged in · Please run /login"
    expected: list[Event] = [
        SessionStarted(session_id=sid, model="claude-opus-5-5"),
        Error(message=text, code="auth_required"),
        Result(
            text=text,
            is_error=True,
            usage=Usage(input_tokens=0, output_tokens=0, cached_input_tokens=0),
            cost_usd=0.0,
            duration_ms=102,
            session_id=sid,
            num_turns=1,
        ),
    ]
    assert expected == run("claude_code_real_not_logged_in.jsonl", exit_code=1)


def test_expired_token_says_log_in_again_at_the_first_401_retry_only() -> None:
    sid = "c0ffee00-1234-4abc-9def-0123456789ab"
    text = (
        'Failed to authenticate. API Error: 401 {"type":"error","error":{"type":'
        '"authentication_error","message":"OAuth token has expired. Please obtain a new '
        'token or refresh your existing token."}}'
    )
    expected: list[Event] = [
        SessionStarted(session_id=sid, model=MODEL),
        Error(
            message="the Claude API refused the stored credentials (HTTP 401)",
            code="auth_required",
        ),
        Result(
            text=text,
            is_error=True,
            usage=Usage(input_tokens=0, output_tokens=0, cached_input_tokens=0),
            cost_usd=0.0,
            duration_ms=812,
            session_id=sid,
            num_turns=1,
        ),
    ]
    assert expected == run("claude_code_expired_token.jsonl", exit_code=1)


def test_error_during_execution_reports_retries_as_warnings_and_the_errors_list() -> None:
    sid = "d1e2f3a4-5b6c-4d7e-8f90-a1b2c3d4e5f6"
    expected: list[Event] = [
        SessionStarted(session_id=sid, model=MODEL),
        ToolUse(id="toolu_30Test", name="Bash", input={"command": "pytest -q"}),
        ToolResult(id="toolu_30Test", output="Exit code 1\n1 failed, 4 passed", is_error=True),
        Error(message="Claude API call failed (overloaded, HTTP 529); retry 1/10", code="warning"),
        Error(message="API Error: 529 Overloaded", code="cli_error"),
        Result(
            is_error=True,
            usage=Usage(input_tokens=9, output_tokens=31, cached_input_tokens=20480),
            cost_usd=0.0312,
            duration_ms=60211,
            session_id=sid,
            num_turns=2,
        ),
    ]
    assert expected == run("claude_code_midstream_error.jsonl", exit_code=1)


def test_error_subtype_fails_the_run_even_when_is_error_is_false() -> None:
    sid = "e5f6a7b8-9c0d-4e1f-a2b3-c4d5e6f7a8b9"
    expected: list[Event] = [
        SessionStarted(session_id=sid, model=MODEL),
        ToolUse(id="toolu_40", name="Bash", input={"command": "make"}),
        ToolResult(id="toolu_40", output="make: Nothing to be done for 'all'."),
        Error(message="claude stopped after reaching its maximum number of turns"),
        Result(
            is_error=True,
            usage=Usage(input_tokens=5, output_tokens=25, cached_input_tokens=0),
            cost_usd=0.004,
            duration_ms=9001,
            session_id=sid,
            num_turns=1,
        ),
    ]
    assert expected == run("claude_code_max_turns.jsonl")


def test_partial_messages_stream_deltas_once_and_ignore_unknown_events() -> None:
    # With --include-partial-messages the full assistant message repeats what the
    # deltas said; rate_limit_event and unknown types produce nothing.
    sid = "f0e1d2c3-b4a5-4968-8776-655443322110"
    expected: list[Event] = [
        SessionStarted(session_id=sid, model=MODEL),
        TextDelta(text="Two plus two ", thinking=True),
        TextDelta(text="is four.", thinking=True),
        TextDelta(text="2 + 2"),
        TextDelta(text=" = 4"),
        Result(
            text="2 + 2 = 4",
            usage=Usage(input_tokens=3, output_tokens=15, cached_input_tokens=11876),
            cost_usd=0.0051,
            duration_ms=1830,
            session_id=sid,
            num_turns=1,
        ),
    ]
    assert expected == run("claude_code_partial.jsonl")


def test_assistant_message_without_an_id_is_skipped_only_in_partial_mode() -> None:
    line = '{"type":"assistant","message":{"content":[{"type":"text","text":"whole"}]}}'
    plain = ClaudeStreamParser()
    assert [TextDelta(text="whole")] == plain.feed(line)

    partial = ClaudeStreamParser()
    partial.feed('{"type":"stream_event","event":{"type":"message_start","message":{}}}')
    assert partial.feed(line) == []


def test_assistant_api_error_other_than_auth_is_a_cli_error() -> None:
    parser = ClaudeStreamParser()
    line = (
        '{"type":"assistant","error":"billing_error","message":{"model":"<synthetic>",'
        '"content":[{"type":"text","text":"Credit balance is too low"}]}}'
    )
    assert [Error(message="Credit balance is too low", code="cli_error")] == parser.feed(line)


def test_result_with_http_401_status_is_auth_required() -> None:
    parser = ClaudeStreamParser()
    line = (
        '{"type":"result","subtype":"success","is_error":true,"api_error_status":401,'
        '"result":"API Error: request rejected","session_id":"s"}'
    )
    expected: list[Event] = [
        Error(message="API Error: request rejected", code="auth_required"),
        Result(text="API Error: request rejected", is_error=True, session_id="s"),
    ]
    assert expected == parser.feed(line)
