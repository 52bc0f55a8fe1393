"""The playground in a real browser: prompts stream, side by side, with tool calls; Stop stops."""

from __future__ import annotations

import re

from playwright.sync_api import Locator, Page, expect

from tests.support.poll import eventually
from tests.web.dashboard import Dashboard
from tests.web.ops_support import connect


def column(page: Page, provider: str) -> Locator:
    return page.locator(f'#answers .answer[data-provider="{provider}"]')


def run(page: Page, prompt: str) -> None:
    page.get_by_label("Prompt").fill(prompt)
    page.get_by_role("button", name="Run").click()


def test_a_users_prompt_streams_its_text_tool_call_and_usage(dash: Dashboard) -> None:
    dash.sign_in("user:ada")
    connect(dash, "ada", "claude_code")
    page = dash.open("/remote-cli/playground")
    claude = page.get_by_role("checkbox", name=re.compile("Claude Code"))
    expect(claude).to_be_checked()  # the connected provider is picked
    expect(page.get_by_role("checkbox", name=re.compile("Codex"))).to_be_disabled()
    expect(page.locator("#pick-codex")).to_contain_text("not connected")
    dash.step(page, "providers")

    page.get_by_label("Prompt").fill("please run a tool")
    page.get_by_label("Prompt").press("Control+Enter")  # the keyboard runs it too
    answer = column(page, "claude_code")
    expect(answer.locator(".out")).to_have_text("You said: please run a tool")
    tool = answer.locator(".tool")
    expect(tool).to_contain_text("→ Bash")
    expect(tool).to_contain_text("echo hello")
    expect(tool.locator(".result")).to_have_text(re.compile(r"^hello\s*$"))
    expect(answer.locator(".usage")).to_contain_text(re.compile(r"\d+ tokens in · .*\d+ out"))
    expect(answer.locator(".badge")).to_have_text(re.compile(r"^succeeded · \d"))
    expect(page.get_by_role("button", name="Run")).to_be_enabled()
    expect(page.get_by_role("button", name="Stop")).to_be_disabled()
    dash.step(page, "answered")


def test_perspectives_stream_side_by_side_for_a_picked_user(dash: Dashboard) -> None:
    dash.sign_in("service")
    dash.token("user:bob")  # creates bob
    connect(dash, "bob", "claude_code")
    connect(dash, "bob", "gemini_cli")
    page = dash.open("/remote-cli/playground")
    page.get_by_label("User id").fill("bob")
    page.get_by_role("button", name="Use").click()
    expect(page).to_have_url(re.compile(r"/remote-cli/playground\?user=bob$"))
    gemini = page.get_by_role("checkbox", name=re.compile("Gemini"))
    expect(gemini).to_be_enabled()
    gemini.check()
    expect(page.get_by_role("checkbox", name=re.compile("Claude Code"))).to_be_checked()
    run(page, "please run a tool, then compare")
    for provider in ("claude_code", "gemini_cli"):
        answer = column(page, provider)
        expect(answer.locator(".out")).to_contain_text("You said: please run a tool, then compare")
        expect(answer.locator(".tool .result")).to_contain_text("hello")
        expect(answer.locator(".badge")).to_have_text(re.compile(r"^succeeded"))
    # Side by side on a desktop: the two columns share a row.
    boxes = [column(page, p).bounding_box() for p in ("claude_code", "gemini_cli")]
    assert boxes[0] is not None and boxes[1] is not None
    assert (boxes[0]["y"], boxes[0]["x"] < boxes[1]["x"]) == (boxes[1]["y"], True)
    expect(page.locator("#run-status")).to_have_text("Finished.")
    dash.step(page, "two columns")
    dash.doc_screenshot(page, "playground")


def test_stop_ends_a_running_prompt(dash: Dashboard) -> None:
    dash.sign_in("user:cy")
    connect(dash, "cy", "claude_code")
    page = dash.open("/remote-cli/playground")
    expect(page.get_by_role("checkbox", name=re.compile("Claude Code"))).to_be_checked()
    run(page, "hang")  # the fake CLI sleeps until it is killed
    answer = column(page, "claude_code")
    expect(answer.locator(".badge")).to_have_text("running")
    dash.step(page, "running")
    page.get_by_role("button", name="Stop").click()
    expect(answer.locator(".badge")).to_have_text("cancelled")
    expect(page.locator("#run-status")).to_have_text("Stopped: the runs were cancelled.")
    expect(page.get_by_role("button", name="Run")).to_be_focused()
    dash.step(page, "stopped")
    # The controller cancelled the run in the VM: its record says so.
    admin = dash.controller.client()
    [vm] = [v for v in admin.get("/api/vms").json()["vms"] if v["userId"] == "cy"]

    def ended_runs() -> list[dict[str, str]] | None:
        runs: list[dict[str, str]] = admin.get(f"/api/vms/{vm['id']}/sessions").json()["recentRuns"]
        return runs if runs and runs[0]["status"] != "running" else None

    runs = eventually("the run's record to end", ended_runs, 10)
    assert [(r["provider"], r["status"]) for r in runs] == [("claude_code", "cancelled")]
    # The next run works at once: the lease was released.
    run(page, "hello")
    expect(answer.locator(".out")).to_have_text("You said: hello")
