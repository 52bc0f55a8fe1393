"""What every stream parser promises: bad lines never raise, finish() explains failures."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from remotecli.providers.events import Error, Event, Result, StreamParser
from remotecli.providers.stream import ClaudeStreamParser, CodexStreamParser, GeminiStreamParser
from remotecli.providers.stream._jsonl import NOISE_LINES_KEPT, JsonlParser, classify_auth

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "streams"

PARSERS: dict[str, type[JsonlParser]] = {
    "claude": ClaudeStreamParser,
    "codex": CodexStreamParser,
    "gemini": GeminiStreamParser,
}
FIXTURE_PREFIX = {"claude": "claude_code_", "codex": "codex_", "gemini": "gemini_cli_"}

# One line per CLI that ends a run successfully, and one that ends it in failure.
RESULT_LINE = {
    "claude": '{"type":"result","subtype":"success","is_error":false,"result":"ok"}',
    "codex": '{"type":"turn.completed","usage":{"input_tokens":1,"output_tokens":1}}',
    "gemini": '{"type":"result","status":"success"}',
}
FATAL_LINE = {
    "claude": '{"type":"assistant","error":"server_error","message":{"content":[]}}',
    "codex": '{"type":"turn.failed","error":{"message":"boom"}}',
    "gemini": '{"type":"result","status":"error","error":{"type":"Error","message":"boom"}}',
}
WARNING_LINE = {
    "claude": '{"type":"system","subtype":"api_retry","attempt":1,"max_retries":10,"error":"x"}',
    "codex": '{"type":"error","message":"Reconnecting... 1/5 (offline)"}',
    "gemini": '{"type":"error","severity":"warning","message":"Attempt 1 failed"}',
}

# Values of the wrong type for any field: the parsers must read them as absent.
WRONG_VALUES: list[Any] = [None, 0, 1.5, True, "x", [], {}, [1, "x", None, {}], {"type": []}]


def fixture_lines(cli: str) -> list[str]:
    lines: list[str] = []
    for path in sorted(FIXTURES.glob(f"{FIXTURE_PREFIX[cli]}*.jsonl")):
        lines += path.read_text(encoding="utf-8").splitlines()
    return lines


def mutations(obj: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """``obj`` with one field, at any depth, replaced by a value of the wrong type."""
    for key, value in obj.items():
        for wrong in WRONG_VALUES:
            yield {**obj, key: wrong}
        if isinstance(value, dict):
            for inner in mutations(value):
                yield {**obj, key: inner}
        elif isinstance(value, list):
            for i, element in enumerate(value):
                if isinstance(element, dict):
                    for inner in mutations(element):
                        yield {**obj, key: [*value[:i], inner, *value[i + 1 :]]}


def unparsed(events: list[Event]) -> list[Event]:
    return [e for e in events if isinstance(e, Error) and e.code == "unparsed"]


@pytest.fixture(params=sorted(PARSERS))
def cli(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def test_every_parser_is_a_stream_parser(cli: str) -> None:
    parser: StreamParser = PARSERS[cli]()  # mypy checks the protocol here
    assert parser.finish(0, "") == []


def test_blank_lines_are_ignored(cli: str) -> None:
    parser = PARSERS[cli]()
    assert [e for line in ("", "   ", "\r", "\t") for e in parser.feed(line)] == []
    assert list(parser.noise) == []


def test_plain_text_and_non_object_json_are_kept_as_noise(cli: str) -> None:
    parser = PARSERS[cli]()
    lines = [
        "Warning: True color (24-bit) support not detected.",
        "\x1b[2m2026-11-29T16:36:52Z\x1b[0m \x1b[31mERROR\x1b[0m codex_api: failed",
        "42",
        "null",
        '"a string"',
        "[1, 2]",
    ]
    assert [e for line in lines for e in parser.feed(line)] == []
    assert lines == list(parser.noise)


def test_noise_keeps_only_the_latest_lines(cli: str) -> None:
    parser = PARSERS[cli]()
    for n in range(NOISE_LINES_KEPT + 50):
        parser.feed(f"warning {n}")
    assert len(parser.noise) == NOISE_LINES_KEPT
    assert f"warning {NOISE_LINES_KEPT + 49}" == parser.noise[-1]


def test_broken_json_object_is_an_unparsed_error_quoting_the_line(cli: str) -> None:
    line = '{"type":"result","is_err'
    expected: list[Event] = [
        Error(message=f"{cli} printed a line that is not valid JSON: {line}", code="unparsed")
    ]
    assert expected == PARSERS[cli]().feed(line)


def test_unparsed_error_quotes_at_most_200_characters(cli: str) -> None:
    line = '{"type":"message","content":"' + "x" * 1000
    (event,) = PARSERS[cli]().feed(line)
    assert isinstance(event, Error)
    assert event.message.endswith(line[:200] + "…")


def test_absurdly_nested_json_is_unparsed_not_a_crash(cli: str) -> None:
    depth = 100_000
    line = '{"a":' * depth + "1" + "}" * depth
    assert [e.code for e in PARSERS[cli]().feed(line) if isinstance(e, Error)] == ["unparsed"]


def test_fields_of_the_wrong_type_never_raise_nor_read_as_unparsed(cli: str) -> None:
    # Fed into one running parser, between the original lines, so that the
    # stateful paths (tool pairing, partial messages, dedup) see them too.
    parser = PARSERS[cli]()
    fed = 0
    for line in fixture_lines(cli):
        text = line.strip()
        if text.startswith("{"):
            for mutated in mutations(json.loads(text)):
                events = parser.feed(json.dumps(mutated))
                assert unparsed(events) == [], mutated
                fed += 1
        parser.feed(line)
    assert fed > 1000  # the fixtures really were exercised


def test_a_line_cut_anywhere_never_raises(cli: str) -> None:
    for line in fixture_lines(cli):
        text = line.strip()
        if not text.startswith("{"):
            continue
        parser = PARSERS[cli]()
        for end in range(1, len(text)):
            events = parser.feed(text[:end])
            assert 1 == len(unparsed(events)) == len(events), text[:end]


def test_every_fixture_event_serializes_to_json(cli: str) -> None:
    parser = PARSERS[cli]()
    events = [e for line in fixture_lines(cli) for e in parser.feed(line)]
    assert events
    for event in events:
        assert event.to_dict() == json.loads(json.dumps(event.to_dict()))


# --- finish() -------------------------------------------------------------------


def test_non_zero_exit_without_result_is_an_exit_error(cli: str) -> None:
    expected: list[Event] = [
        Error(
            message=f"{cli} exited with code 1",
            code="exit",
            exit_code=1,
            stderr_tail="boom",
        )
    ]
    assert expected == PARSERS[cli]().finish(1, "boom")


def test_death_by_signal_is_said_so(cli: str) -> None:
    (event,) = PARSERS[cli]().finish(-9, "")
    assert Error(
        message=f"{cli} was killed by signal 9", code="exit", exit_code=-9, stderr_tail=""
    ) == (event)


def test_clean_exit_without_result_adds_nothing(cli: str) -> None:
    assert PARSERS[cli]().finish(0, "") == []


def test_non_zero_exit_after_a_result_adds_nothing(cli: str) -> None:
    parser = PARSERS[cli]()
    assert any(isinstance(e, Result) for e in parser.feed(RESULT_LINE[cli]))
    assert parser.finish(1, "boom") == []


def test_non_zero_exit_after_a_fatal_error_adds_nothing(cli: str) -> None:
    parser = PARSERS[cli]()
    assert any(isinstance(e, Error) for e in parser.feed(FATAL_LINE[cli]))
    assert parser.finish(1, "boom") == []


def test_warnings_do_not_explain_a_failed_exit(cli: str) -> None:
    parser = PARSERS[cli]()
    (warning,) = parser.feed(WARNING_LINE[cli])
    assert isinstance(warning, Error)
    assert warning.code == "warning"
    assert [e.code for e in parser.finish(1, "") if isinstance(e, Error)] == ["exit"]


def test_stderr_saying_log_in_again_sets_the_exit_error_code(cli: str) -> None:
    stderr = (
        "2026-03-04T08:56:12Z ERROR codex_core::auth: Failed to refresh token: Your access "
        "token could not be refreshed because your refresh token has expired. Please log "
        "out and sign in again."
    )
    expected: list[Event] = [
        Error(
            message=f"{cli} exited with code 1",
            code="refresh_failed",
            exit_code=1,
            stderr_tail=stderr,
        )
    ]
    assert expected == PARSERS[cli]().finish(1, stderr)


def test_text_is_not_emitted_for_empty_strings(cli: str) -> None:
    lines = {
        "claude": '{"type":"assistant","message":{"content":[{"type":"text","text":""}]}}',
        "codex": '{"type":"item.completed","item":{"id":"a","type":"agent_message","text":""}}',
        "gemini": '{"type":"message","role":"assistant","content":"","delta":true}',
    }
    assert PARSERS[cli]().feed(lines[cli]) == []


# --- what reads as "log in again" ------------------------------------------------


@pytest.mark.parametrize(
    ("message", "code"),
    [
        # openai/codex codex-rs core auth REFRESH_TOKEN_*_MESSAGE
        (
            "Your access token could not be refreshed because your refresh token has "
            "expired. Please log out and sign in again.",
            "refresh_failed",
        ),
        (
            "Your access token could not be refreshed because your refresh token was "
            "revoked. Please log out and sign in again.",
            "refresh_failed",
        ),
        ('{"error": {"code": "refresh_token_reused"}}', "refresh_failed"),
        ("refresh_token_invalidated", "refresh_failed"),
        # Google's token endpoint (Gemini oauth-personal)
        (
            '{"error":"invalid_grant","error_description":"Token has been expired or revoked."}',
            "refresh_failed",
        ),
        # Claude Code
        ("Not logged in · Please run /login", "auth_required"),
        ("Invalid API key · Please run /login", "auth_required"),
        (
            'API Error: 401 {"type":"error","error":{"type":"authentication_error"}}',
            "auth_required",
        ),
        # Codex signed out
        (
            "unexpected status 401 Unauthorized: Missing bearer or basic authentication",
            "auth_required",
        ),
        # neither
        ("stream disconnected before completion", None),
        ("API Error: 529 Overloaded", None),
        ("processed 4010 files", None),
    ],
)
def test_classify_auth(message: str, code: str | None) -> None:
    assert code == classify_auth(message)
