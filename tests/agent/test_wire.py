"""The agent's wire (``agent/wire.py``): one dataclass per request and answer, both sides.

Every wire dataclass goes to JSON and comes back as itself; every run event
comes back as the same typed event, with the keys ``providers/events.py``
always wrote (the controller's SSE stream re-sends them as they are); the
OpenAPI document generated from the wire lists every route with its
parameters, body and answer, and the answers the wire writes satisfy it;
a malformed body is refused with the codes the agent always gave.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import types
import typing
from typing import Any, Literal, Union

import jsonschema_rs
import pytest

from remotecli.agent import codec, wire
from remotecli.agent.errors import BadRequest
from remotecli.agent.openapi import DOCUMENT
from remotecli.providers import get_provider
from remotecli.providers.events import Result, Usage

#: Every dataclass of the wire: the requests and answers of the routes, what they hold, the events.
WIRE_CLASSES = sorted(
    {
        cls
        for cls in vars(wire).values()
        if isinstance(cls, type)
        and dataclasses.is_dataclass(cls)
        and cls.__module__ == wire.__name__
        and cls is not wire.Route
    }
    | set(wire.EVENTS.values()),
    key=lambda cls: cls.__name__,
)


def sample(tp: Any, name: str = "x") -> Any:
    """A value of ``tp`` with every optional part filled in (so every key is exercised)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return {"any": [1, "two"]}
    if origin in (Union, types.UnionType):
        return sample(next(a for a in typing.get_args(tp) if a is not type(None)), name)
    if origin is Literal:
        return typing.get_args(tp)[-1]
    if origin is list:
        return [sample(typing.get_args(tp)[0], name)]
    if origin is dict:
        return {"k": sample(typing.get_args(tp)[1], name)}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return list(tp)[-1]
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        hints = codec.hints(tp)
        return tp(**{f.name: sample(hints[f.name], f.name) for f in dataclasses.fields(tp)})
    return {bool: True, int: 7, float: 2.5, str: f"{name}-value"}[tp]


@pytest.mark.parametrize("cls", WIRE_CLASSES, ids=lambda cls: cls.__name__)
def test_every_wire_dataclass_round_trips_through_json(cls: type) -> None:
    value = sample(cls)
    # A request's path and query fields travel beside its body: each comes back from its place.
    sent = {
        where: json.loads(json.dumps(codec.to_json(value, where=where)))
        for where in ("body", "path", "query")
    }
    hints = codec.hints(cls)
    back = {
        f.name: codec.decode(hints[f.name], sent[codec.where_of(f)][codec.key_of(f)], f.name)
        for f in dataclasses.fields(cls)
    }
    assert cls(**back) == value
    if all(codec.where_of(f) == "body" for f in dataclasses.fields(cls)):
        assert codec.from_json(cls, sent["body"]) == value
    assert codec.to_json(cls(**back)) == sent["body"]


@pytest.mark.parametrize("cls", list(wire.EVENTS.values()), ids=list(wire.EVENTS))
def test_every_run_event_comes_back_as_the_same_typed_event_with_the_same_keys(cls: type) -> None:
    event = sample(cls)
    line = json.dumps(codec.to_json(event))
    back = wire.event_from_json(json.loads(line))
    assert (type(back), back) == (cls, event)
    assert json.dumps(codec.to_json(back)) == line
    if hasattr(event, "to_dict"):  # a provider's event: the JSON the agent always streamed
        assert json.dumps(event.to_dict()) == line


def test_an_event_as_the_agent_streams_it_keeps_its_numbers_as_sent() -> None:
    line = {
        "type": "result", "text": "hi", "isError": False,
        "usage": {"inputTokens": 3, "outputTokens": 5, "cachedInputTokens": None},
        "costUsd": 0, "durationMs": 1200, "sessionId": "s", "numTurns": 1,
    }  # fmt: skip
    back = wire.event_from_json(line)
    assert back == Result(
        text="hi", usage=Usage(3, 5, None), cost_usd=0, duration_ms=1200, session_id="s",
        num_turns=1,
    )  # fmt: skip
    assert json.dumps(codec.to_json(back)) == json.dumps(line)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ({"type": "shout", "text": "x"}, "unknown type 'shout'"),
        ({"text": "x"}, "unknown type None"),
        ({"type": "text", "text": 3}, "the text event.text: expected a string, got int"),
        ({"type": "run.started", "runId": "r"}, "the key 'provider' is missing"),
        (["type", "text"], "unknown type None"),
    ],
)
def test_a_line_that_is_not_a_run_event_is_refused(line: Any, problem: str) -> None:
    with pytest.raises(codec.WireError, match=problem):
        wire.event_from_json(line)


def test_a_phase_travels_as_the_wires_enum() -> None:
    session = sample(wire.Session)
    sent = codec.to_json(dataclasses.replace(session, phase=wire.LoginPhase.VERIFYING))
    assert sent["phase"] == "verifying"
    back = codec.from_json(wire.Session, sent)
    assert (back.phase, back.phase.ended) == (wire.LoginPhase.VERIFYING, False)
    with pytest.raises(codec.WireError, match="'dancing' is not a LoginPhase"):
        codec.from_json(wire.Session, sent | {"phase": "dancing"})


def test_a_relay_status_is_sent_only_when_there_is_one() -> None:
    session = dataclasses.replace(sample(wire.Session), relay_status=None)
    assert "relayStatus" not in codec.to_json(session)
    assert codec.to_json(dataclasses.replace(session, relay_status=302))["relayStatus"] == 302


# -- the generated OpenAPI document ----------------------------------------------


@pytest.mark.parametrize("route", wire.ROUTES, ids=lambda r: f"{r.method} {r.path}")
def test_the_document_describes_every_route_from_its_dataclasses(route: wire.Route) -> None:
    operation = DOCUMENT["paths"][route.path][route.method.lower()]
    expected = {str(route.status), "400", "413", *map(str, route.errors)}
    expected |= set() if route.public else {"401"}
    assert set(operation["responses"]) == expected
    for status, response in operation["responses"].items():
        if status != str(route.status):
            schema = response["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/Error"}
    assert (operation.get("security") == []) == route.public
    fields = dataclasses.fields(route.request)
    parameters = {(p["in"], p["name"]) for p in operation.get("parameters", [])}
    assert parameters == {
        (codec.where_of(f), codec.key_of(f)) for f in fields if codec.where_of(f) != "body"
    }
    body_keys = {codec.key_of(f) for f in fields if codec.where_of(f) == "body"}
    if body_keys:
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        assert set(schema["properties"]) == body_keys
    else:
        assert "requestBody" not in operation
    ok = operation["responses"][str(route.status)]["content"]
    if route.answer is None:
        assert ok == {"application/x-ndjson": {}}
        return
    # What the agent writes for this answer satisfies the document (and a wrong type does not).
    validator = _validator(ok["application/json"]["schema"])
    answer = codec.to_json(sample(route.answer))
    assert validator.is_valid(answer), list(validator.iter_errors(answer))
    key = next(iter(answer))
    assert not validator.is_valid(answer | {key: [[None]]})


def test_every_run_event_satisfies_the_documents_event_schema() -> None:
    validator = _validator({"$ref": "#/components/schemas/RunEvent"})
    for cls in wire.EVENTS.values():
        assert validator.is_valid(codec.to_json(sample(cls))), cls
    assert not validator.is_valid({"type": "shout"})


def _validator(schema: dict[str, Any]) -> Any:
    return jsonschema_rs.validator_for(schema | {"components": DOCUMENT["components"]})


# -- malformed bodies: the agent's codes -------------------------------------------

CODEX = get_provider("codex")


@pytest.mark.parametrize(
    ("parse", "code", "message"),
    [
        (lambda: wire.StartLogin.parse(CODEX, {"mode": "fax"}), "unsupported_login_mode",
         "unknown login mode 'fax'; Codex CLI supports: "),
        (lambda: wire.StartLogin.parse(CODEX, {"waitSeconds": "soon"}), "invalid_body",
         "wait must be a number of seconds"),
        (lambda: wire.StartLogin.parse(CODEX, {"waitSeconds": 31}), "invalid_body",
         "wait must be between 0 and 30 seconds"),
        (lambda: wire.LoginQuery.parse({}), "session_id_required", "sessionId is required"),
        (lambda: wire.SubmitCode.parse("s", {"code": 12}), "invalid_body",
         "'code' must be a string"),
        (lambda: wire.SubmitCode.parse("s", {"callbackUrl": []}), "invalid_body",
         "'callbackUrl' must be a string"),
        (lambda: wire.WriteCredentials.parse({"files": []}), "invalid_body",
         "'provider' is required and must be a non-empty string"),
        (lambda: wire.WriteCredentials.parse({"provider": "codex", "files": []}),
         "invalid_files", "'files' must be a non-empty list"),
        (lambda: wire.WriteCredentials.parse({"provider": "codex", "files": ["a"]}),
         "invalid_files", "each file must be an object"),
        (lambda: wire.WriteCredentials.parse({"provider": "codex", "files": [{"path": "a"}]}),
         "invalid_files", "each file needs string 'path' and 'content'"),
        (lambda: wire.WriteCredentials.parse(
            {"provider": "codex", "files": [{"path": "a", "content": "", "encoding": "hex"}]}),
         "invalid_files", "encoding must be 'utf-8' or 'base64'"),
        (lambda: _run({"prompt": ""}), "invalid_body",
         "'prompt' is required and must be a non-empty string"),
        (lambda: _run({"prompt": "x" * 200_001}), "prompt_too_long",
         "prompt is longer than 200000 characters"),
        (lambda: _run({"options": []}), "invalid_body", "'options' must be an object"),
        (lambda: _run({"options": {"colour": "red"}}), "invalid_option", "unknown options: colour"),
        (lambda: _run({"options": {"model": "a b"}}), "invalid_option",
         "'model' must be a model name"),
        (lambda: _run({"options": {"permission": None}}), "invalid_option",
         "'permission' must be a string"),
        (lambda: _run({"apiKey": " "}), "invalid_body", "'apiKey' must be a non-empty string"),
        (lambda: _run({"timeoutSeconds": 0}), "invalid_body",
         "'timeoutSeconds' must be a number in (0, 3600]"),
        (lambda: wire.SetIdentity.parse({"token": "t" * 16, "shell": "sh"}), "invalid_body",
         "unknown fields: shell"),
        (lambda: wire.SetIdentity.parse({"token": "short"}), "invalid_token_value",
         "'token' must be at least 16 printable characters without spaces"),
        (lambda: wire.SetIdentity.parse({"token": "t" * 16, "hostname": "A_B"}),
         "invalid_hostname", "'hostname' must be one DNS label"),
        (lambda: wire.SetIdentity.parse({"token": "t" * 16, "hostname": "a", "entropy": "AA=="}),
         "invalid_entropy", "'entropy' must be base64 of 32 to 512 random bytes"),
    ],
)  # fmt: skip
def test_a_malformed_request_is_refused_with_the_agents_code(
    parse: Any, code: str, message: str
) -> None:
    with pytest.raises(BadRequest) as refused:
        parse()
    assert (refused.value.status, refused.value.code) == (400, code)
    assert refused.value.message.startswith(message), refused.value.message


def test_a_run_request_is_parsed_with_its_defaults() -> None:
    ask = _run({"options": {"model": "gpt-5"}})
    assert ask == wire.RunPrompt(
        "codex", "hi", wire.RunOptions(model="gpt-5"), timeout_seconds=600.0
    )
    assert (ask.prompt_options().model, ask.prompt_options().permission) == (
        "gpt-5", "workspace-write",
    )  # fmt: skip
    # What the client sends for it is what the agent parses back.
    assert wire.RunPrompt.parse(codec.to_json(ask), default_timeout=1, max_timeout=3600) == ask


def _run(body: dict[str, Any]) -> wire.RunPrompt:
    return wire.RunPrompt.parse(
        {"provider": "codex", "prompt": "hi", **body}, default_timeout=600.0, max_timeout=3600.0
    )
