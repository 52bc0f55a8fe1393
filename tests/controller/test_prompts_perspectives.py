"""POST /api/perspectives: one prompt on several providers in parallel, streamed side by side."""

from __future__ import annotations

from remotecli.controller.db.models import RunStatus
from tests.support.controller import PROVIDERS, Controller
from tests.support.streams import Event, names, only, text_of


def of(events: list[Event], provider: str) -> list[Event]:
    return [(n, d) for n, d in events if d.get("provider") == provider]


def test_three_providers_answer_side_by_side(world: Controller) -> None:
    user = world.add_user("ada")
    for provider in PROVIDERS:
        world.connect(user, provider)
    events = world.perspectives(user, PROVIDERS, "hello")
    assert names(events)[-1] == "end"
    assert all("provider" in d for n, d in events if n != "end"), events
    group = only(events, "end")["groupId"]
    for provider in PROVIDERS:
        mine = of(events, provider)
        assert names(mine)[0] == "run" and names(mine)[-1] == "done", mine
        assert text_of(mine) == "You said: hello"
        done = only(mine, "done")
        assert done["status"] == "succeeded"
        row = world.run_row(done["runId"])
        assert row is not None and (row.group_id, row.status) == (group, RunStatus.SUCCEEDED)
    # One VM, three runs, each with its own lease.
    assert len({only(of(events, p), "run")["vmId"] for p in PROVIDERS}) == 1
    assert all(world.lease(user, p) is not None for p in PROVIDERS)
    summary = only(events, "end")["runs"]
    assert [(r["provider"], r["status"]) for r in summary] == [(p, "succeeded") for p in PROVIDERS]


def test_a_failing_provider_does_not_stop_the_others(world: Controller) -> None:
    user = world.add_user("ada")
    world.connect(user, "claude_code")
    world.connect(user, "codex")  # no Gemini
    events = world.perspectives(user, PROVIDERS, "hello")
    gemini = of(events, "gemini_cli")
    assert names(gemini) == ["error", "done"]
    assert only(gemini, "error")["code"] == "not_connected"
    for provider in ("claude_code", "codex"):
        assert text_of(of(events, provider)) == "You said: hello"
    statuses = {r["provider"]: r["status"] for r in only(events, "end")["runs"]}
    assert statuses == {"claude_code": "succeeded", "codex": "succeeded", "gemini_cli": "failed"}


def test_perspectives_refuse_an_unknown_user_and_repeated_providers(world: Controller) -> None:
    response = world.client("service").post(
        "/api/perspectives", json={"userId": "nobody", "providers": ["codex"], "prompt": "hi"}
    )
    assert (response.status_code, response.json()["code"]) == (404, "unknown_user")
    user = world.add_user("ada")
    response = world.client("service").post(
        "/api/perspectives", json={"userId": user, "providers": ["codex", "codex"], "prompt": "x"}
    )
    assert (response.status_code, response.json()["code"]) == (422, "invalid_request")
