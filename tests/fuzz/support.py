"""What every fuzzed response must satisfy, for the controller and the agent alike.

Schemathesis makes the requests; these checks say what a hostile request may
get back: never a 5xx, never a Python stack trace, an exception class name or
a path of the code, and every 4xx is JSON ``{"code", "message", ...}`` (the
shape of ``controller/errors.py`` and ``agent/errors.py``).
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

import remotecli
from tests.support.agent_harness import PACKAGE

#: Deterministic and bounded: the same examples on every run (CI repeats what a
#: developer saw), a handful per operation so the whole fuzz stays in budget.
FUZZ_SETTINGS = settings(
    max_examples=12,
    derandomize=True,
    deadline=None,  # speed is measured in bench/, never asserted here
    database=None,  # no .hypothesis/ directory in the work tree; derandomize replays anyway
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

#: What a leaked exception looks like in a body.
LEAK = re.compile(
    r"Traceback \(most recent call last\)"
    r"|File \"[^\"]+\", line \d+"
    r"|\b[A-Z]\w*(?:Error|Exception)\b"
    r"|\.py\b"
)
#: The controller's API tokens (security.py: ``rcli_<kind>_<random>``).
API_TOKEN = re.compile(r"(rcli_[a-z]+_)[\w-]+")
#: Paths of the code and the interpreter, which no answer has a reason to name.
CODE_PATHS = (str(PACKAGE.parent), str(PACKAGE), sys.prefix, sys.base_prefix, "site-packages")

assert remotecli  # the package whose paths CODE_PATHS names

#: A generated request (schemathesis's Case is generic in the operation's type).
FuzzCase = schemathesis.Case[Any]


def describe(case: FuzzCase, status: int, text: str) -> str:
    """The request and the answer, for a failure message (never a token: the caller's is in
    no part shown, one an answer made, as by ``POST /api/tokens``, is masked)."""
    body = json.dumps(case.body, default=lambda _: "<none>")
    answer = API_TOKEN.sub(r"\1…", text[:1000])
    return (
        f"{case.method} {case.formatted_path} query={case.query} body={body[:500]!r} "
        f"-> {status}: {answer!r}"
    )


def call_checked(
    case: FuzzCase, base_url: str, headers: dict[str, str], timeout: float, *, conform: bool = True
) -> tuple[schemathesis.Response, str]:
    """Send ``case``; ``check_answer`` on what comes back and, with ``conform``, the
    document's status codes, schemas and content types. The answer and its text."""
    response = case.call(base_url=base_url, headers=headers, timeout=timeout)
    text = response.content.decode("utf-8", "replace")
    check_answer(case, response.status_code, {k.lower(): v[0] for k, v in response.headers.items()},
                 text)  # fmt: skip
    if conform:
        case.validate_response(
            response,
            checks=[status_code_conformance, response_schema_conformance, content_type_conformance],
        )
    return response, text


def check_answer(case: FuzzCase, status: int, headers: Any, text: str) -> None:
    """No 5xx, no leaked internals, and every 4xx is the project's JSON error."""
    what = describe(case, status, text)
    assert status < 500, f"a server error answered a fuzzed request: {what}"
    leak = LEAK.search(_without_echoes(text, case))
    assert leak is None, f"the answer shows internals ({leak.group(0)!r}): {what}"
    if 400 <= status < 500:
        # Only errors: a successful answer may name a path on purpose (the agent's
        # /diagnostics says where each CLI is installed).
        for path in CODE_PATHS:
            assert path not in text, f"the error names the code's path {path!r}: {what}"
        content_type = headers.get("content-type", "")
        assert content_type.startswith("application/json"), (
            f"a {status} is not JSON (content-type {content_type!r}): {what}"
        )
        body = json.loads(text)
        assert isinstance(body, dict), f"a {status} body is not a JSON object: {what}"
        assert isinstance(body.get("code"), str) and body["code"], f"no 'code': {what}"
        assert isinstance(body.get("message"), str) and body["message"], f"no 'message': {what}"


def _without_echoes(text: str, case: FuzzCase) -> str:
    """The answer without what the request itself sent: an error may quote the caller's
    input (a 422 names the unexpected field ``options.AError``); that is no leak."""
    sent: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, str):
            sent.add(value)
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(key)
                walk(item)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)

    for part in (case.body, case.query, case.path_parameters, case.headers, case.cookies):
        walk(part)
    for value in sorted((v for v in sent if len(v) > 1), key=len, reverse=True):
        text = text.replace(value, "").replace(json.dumps(value)[1:-1], "")
    return text
