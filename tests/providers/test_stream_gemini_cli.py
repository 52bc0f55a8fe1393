"""GeminiStreamParser against `gemini -o stream-json` runs (fixtures in tests/fixtures/streams/)."""

from __future__ import annotations

from pathlib import Path

import pytest

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
from remotecli.providers.stream import GeminiStreamParser

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "streams"
MODEL = "gemini-2.5-pro"
NO_USAGE = Usage(input_tokens=0, output_tokens=0, cached_input_tokens=0)


def run(fixture: str, exit_code: int = 0, stderr: str = "") -> list[Event]:
    """Feed the fixture line by line (as the agent reads stdout), then finish."""
    parser: StreamParser = GeminiStreamParser()
    events: list[Event] = []
    with (FIXTURES / fixture).open(encoding="utf-8", newline="") as lines:
        for line in lines:
            events += parser.feed(line.rstrip("\n"))
    return events + parser.finish(exit_code, stderr)


def test_text_run_streams_chunks_and_skips_the_prompt_echo() -> None:
    sid = "6f1e2d3c-4b5a-4968-8776-aabbccddeeff"
    expected: list[Event] = [
        SessionStarted(session_id=sid, model=MODEL),
        TextDelta(text="Hello! "),
        TextDelta(text="How can I help"),
        TextDelta(text=" you today?"),
        Result(
            text="Hello! How can I help you today?",
            usage=Usage(input_tokens=8402, output_tokens=19, cached_input_tokens=4096),
            duration_ms=1402,
            session_id=sid,
        ),
    ]
    assert expected == run("gemini_cli_text.jsonl")


def test_tool_run_pairs_tools_and_keeps_only_the_final_answer_as_result_text() -> None:
    sid = "0a1b2c3d-4e5f-4a6b-8c7d-8e9f0a1b2c3d"
    read_id = "read_file-1764410701200-0a9b"
    shell_id = "run_shell_command-1764410702000-1c2d"
    expected: list[Event] = [
        SessionStarted(session_id=sid, model=MODEL),
        TextDelta(text="I'll read the README first."),
        ToolUse(id=read_id, name="read_file", input={"absolute_path": "/home/user/work/README.md"}),
        ToolResult(id=read_id),
        ToolUse(
            id=shell_id,
            name="run_shell_command",
            input={"command": "npm test", "description": "Run the test suite"},
        ),
        # A failed tool reports its error message rather than its display text.
        ToolResult(
            id=shell_id,
            output='Command exited with code 1: npm ERR! Missing script: "test"',
            is_error=True,
        ),
        TextDelta(text="The README describes a demo project. "),
        TextDelta(text="There is no test script to run."),
        Result(
            text="The README describes a demo project. There is no test script to run.",
            usage=Usage(input_tokens=20810, output_tokens=224, cached_input_tokens=12288),
            duration_ms=5200,
            session_id=sid,
        ),
    ]
    assert expected == run("gemini_cli_tool.jsonl")


def test_invalid_grant_is_refresh_failed() -> None:
    sid = "11111111-2222-4333-8444-555555555555"
    expected: list[Event] = [
        SessionStarted(session_id=sid, model=MODEL),
        Error(message="[API Error: invalid_grant]", code="refresh_failed"),
        Result(is_error=True, usage=NO_USAGE, duration_ms=0, session_id=sid),
    ]
    assert expected == run("gemini_cli_refresh_failed.jsonl", exit_code=1)


def test_authentication_error_type_is_auth_required_whatever_the_wording() -> None:
    sid = "22222222-3333-4444-8555-666666666666"
    expected: list[Event] = [
        SessionStarted(session_id=sid, model=MODEL),
        Error(message="Interactive consent could not be obtained.", code="auth_required"),
        Result(is_error=True, usage=NO_USAGE, duration_ms=0, session_id=sid),
    ]
    assert expected == run("gemini_cli_auth_error_result.jsonl", exit_code=41)


def test_invalid_stream_error_event_then_bare_error_result_is_reported_once() -> None:
    sid = "33333333-4444-4555-8666-777777777777"
    expected: list[Event] = [
        SessionStarted(session_id=sid, model="gemini-2.5-flash"),
        TextDelta(text="Let me look at the file"),
        Error(message="Attempt 1 failed with status 429. Retrying with backoff...", code="warning"),
        Error(message="Model stream ended with an invalid chunk or missing finish reason."),
        Result(
            text="Let me look at the file",
            is_error=True,
            usage=Usage(input_tokens=5100, output_tokens=20, cached_input_tokens=0),
            duration_ms=9010,
            session_id=sid,
        ),
    ]
    assert expected == run("gemini_cli_midstream_error.jsonl", exit_code=1)


def test_unknown_events_are_ignored_and_plain_lines_kept_as_noise() -> None:
    parser = GeminiStreamParser()
    events: list[Event] = []
    for line in (FIXTURES / "gemini_cli_unknown_events.jsonl").read_text().splitlines():
        events += parser.feed(line)
    sid = "44444444-5555-4666-8777-888888888888"
    expected: list[Event] = [
        SessionStarted(session_id=sid, model=MODEL),
        TextDelta(text="Hello."),  # a whole message (no delta flag) is text too
        Error(message="Loop detected, stopping execution", code="warning"),
        Result(
            text="Hello.",
            usage=Usage(input_tokens=90, output_tokens=10, cached_input_tokens=0),
            duration_ms=1200,
            session_id=sid,
        ),
    ]
    assert expected == events
    assert list(parser.noise) == ["Loaded cached credentials."]


@pytest.mark.parametrize(
    "fixture", ["gemini_cli_real_noauth", "gemini_cli_real_oauth_noninteractive"]
)
def test_real_unauthenticated_run_prints_nothing_and_exit_41_means_auth_required(
    fixture: str,
) -> None:
    # Verbatim from gemini 0.61.0: no auth method, or oauth-personal without a TTY
    # to log in. stream-json stdout stays empty; stderr says why; exit code 41.
    stderr = (FIXTURES / f"{fixture}.stderr").read_text()
    expected: list[Event] = [
        Error(
            message="gemini exited with code 41: not signed in, or the sign-in is no longer valid",
            code="auth_required",
            exit_code=41,
            stderr_tail=stderr,
        )
    ]
    assert expected == run(f"{fixture}.jsonl", exit_code=41, stderr=stderr)


def test_real_run_killed_while_retrying_reports_the_session_only() -> None:
    # Verbatim from gemini 0.61.0 with a fake API key and no network: it retries
    # on stderr, then exits 0 on SIGTERM without a result. Exit 0 adds no error:
    # whoever killed it (the agent's deadline) says why.
    expected: list[Event] = [
        SessionStarted(session_id="2916ca66-4de6-43bb-b543-5f00e55da9dd", model="auto")
    ]
    assert expected == run("gemini_cli_real_apikey_offline.jsonl", exit_code=0)


@pytest.mark.parametrize(
    ("exit_code", "code", "meaning"),
    [
        (41, "auth_required", "not signed in, or the sign-in is no longer valid"),
        (42, "exit", "the prompt or arguments were rejected"),
        (53, "exit", "the session turn limit was reached"),
        (55, "untrusted_folder", "the working folder is not trusted"),
        (130, "cancelled", "cancelled"),
    ],
)
def test_documented_exit_codes_map_to_error_codes(exit_code: int, code: str, meaning: str) -> None:
    expected: list[Event] = [
        Error(
            message=f"gemini exited with code {exit_code}: {meaning}",
            code=code,
            exit_code=exit_code,
            stderr_tail="tail",
        )
    ]
    assert expected == GeminiStreamParser().finish(exit_code, "tail")
