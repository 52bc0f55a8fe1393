"""Fake ``codex`` (codex-cli 0.171.0): ``--version``, ``login`` (browser, device, API key,
status), ``logout``, ``exec --json``.

Argument errors look like clap's and exit 2, as the real one does. ``exec
--json`` prints the real JSONL event kinds (thread.started, turn.started,
item.started/updated/completed, turn.completed, turn.failed, error).
Stdlib only.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from remotecli.testbed.fake_clis import codex_login
from remotecli.testbed.fake_clis.codex_auth import AuthFailed, ensure_access
from remotecli.testbed.fake_clis.common import (
    TOOL_COMMAND,
    TOOL_OUTPUT,
    Script,
    err,
    hang_forever,
    new_id,
    out,
    run,
    server_url,
)

VERSION = codex_login.VERSION
HELP = """Codex CLI

If no subcommand is specified, options will be forwarded to the interactive CLI.

Usage: codex [OPTIONS] [PROMPT]
       codex [OPTIONS] <COMMAND> [ARGS]

Commands:
  exec        Run Codex non-interactively [aliases: e]
  login       Manage login
  logout      Remove stored authentication credentials
  help        Print this message or the help of the given subcommand(s)

Options:
  -h, --help     Print help
  -V, --version  Print version

(remote-cli test bed: a FAKE codex that talks to $REMOTECLI_TESTBED_URL)
"""
_EXEC_VALUE = {
    "-m",
    "--model",
    "-s",
    "--sandbox",
    "-C",
    "--cd",
    "-c",
    "--config",
    "--color",
    "-p",
    "--profile",
    "--output-last-message",
    "-o",
    "-i",
    "--image",
}
_EXEC_FLAGS = {
    "--json",
    "--skip-git-repo-check",
    "--full-auto",
    "--ephemeral",
    "--dangerously-bypass-approvals-and-sandbox",
    "--oss",
}


class UsageError(Exception):
    def __init__(self, arg: str, usage: str) -> None:
        super().__init__(
            f"error: unexpected argument '{arg}' found\n\n"
            + (f"  tip: to pass '{arg}' as a value, use '-- {arg}'\n\n" if usage == "codex" else "")
            + f"Usage: {_USAGES[usage]}\n\nFor more information, try '--help'.\n"
        )


_USAGES = {
    "codex": "codex [OPTIONS] [PROMPT]\n       codex [OPTIONS] <COMMAND> [ARGS]",
    "login": "codex login [OPTIONS] [COMMAND]",
    "exec": "codex exec [OPTIONS] [PROMPT] [COMMAND]",
}


def _in_git_repo(start: Path) -> bool:
    return any((p / ".git").exists() for p in (start, *start.parents))


class ExecRun:
    """One ``codex exec`` run's event stream (JSONL with ``--json``, plain text otherwise)."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.items = 0

    def emit(self, event: dict[str, Any]) -> None:
        if self.as_json:
            out(json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n")

    def item_id(self) -> str:
        self.items += 1
        return f"item_{self.items - 1}"

    def fail(self, message: str) -> int:
        self.emit({"type": "error", "message": message})
        self.emit({"type": "turn.failed", "error": {"message": message}})
        err(f"ERROR: {message}\n")
        return 1

    def answer(self, script: Script) -> int:
        if script.hangs:
            hang_forever()
        if script.fails:
            return self.fail(f"unexpected status 500 Internal Server Error: {script.failure}")
        reasoning = self.item_id()
        self.emit(
            {
                "type": "item.completed",
                "item": {"id": reasoning, "type": "reasoning", "text": "**Answering the prompt**"},
            }
        )
        if script.uses_tool:
            tool = self.item_id()
            command = f"bash -lc '{TOOL_COMMAND}'"
            started = {
                "id": tool,
                "type": "command_execution",
                "command": command,
                "aggregated_output": "",
                "exit_code": None,
                "status": "in_progress",
            }
            self.emit({"type": "item.started", "item": started})
            done = {
                **started,
                "aggregated_output": TOOL_OUTPUT,
                "exit_code": 0,
                "status": "completed",
            }
            self.emit({"type": "item.completed", "item": done})
            if not self.as_json:
                err(f"exec\n{command}\n succeeded:\n{TOOL_OUTPUT}")
        message = self.item_id()
        text = ""
        for i, chunk in enumerate(script.chunks):
            text += chunk
            kind = "item.started" if i == 0 else "item.updated"
            self.emit(
                {"type": kind, "item": {"id": message, "type": "agent_message", "text": text}}
            )
            time.sleep(0.01)
        self.emit(
            {
                "type": "item.completed",
                "item": {"id": message, "type": "agent_message", "text": text},
            }
        )
        self.emit(
            {
                "type": "turn.completed",
                "usage": {
                    "input_tokens": 2400,
                    "cached_input_tokens": 1024,
                    "output_tokens": 12 + len(text),
                },
            }
        )
        if not self.as_json:
            out(text + "\n")
        return 0


def exec_cmd(argv: list[str]) -> int:
    opts: dict[str, str | bool] = {}
    positional: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        name = arg.partition("=")[0]
        if arg == "--":
            positional.extend(argv[i + 1 :])
            break
        if name in _EXEC_VALUE:
            if "=" in arg:
                opts[name] = arg.partition("=")[2]
            else:
                i += 1
                if i >= len(argv):
                    raise UsageError(arg, "exec")
                opts[name] = argv[i]
        elif arg in _EXEC_FLAGS:
            opts[arg] = True
        elif arg.startswith("-") and arg != "-":
            raise UsageError(arg, "exec")
        else:
            positional.append(arg)
        i += 1
    if "-C" in opts or "--cd" in opts:
        os.chdir(str(opts.get("-C") or opts.get("--cd")))
    if not opts.get("--skip-git-repo-check") and not _in_git_repo(Path.cwd()):
        err("Not inside a trusted directory and --skip-git-repo-check was not specified.\n")
        return 1
    prompt = " ".join(positional)
    if not sys.stdin.isatty() and (not prompt or prompt == "-"):
        err("Reading prompt from stdin...\n")
        prompt = sys.stdin.read().strip()
    elif not sys.stdin.isatty():
        err("Reading additional input from stdin...\n")
        extra = sys.stdin.read().strip()
        if extra:
            prompt = f"{prompt}\n\n{extra}"
    if not prompt:
        err(
            "No prompt provided. Either specify one as an argument or pipe the prompt into stdin.\n"
        )
        return 1
    server = server_url("codex")
    run_ = ExecRun(bool(opts.get("--json")))
    run_.emit({"type": "thread.started", "thread_id": new_id()})
    run_.emit({"type": "turn.started"})
    try:
        ensure_access(server)
    except AuthFailed as exc:
        return run_.fail(str(exc))
    return run_.answer(Script(prompt))


def login_cmd(argv: list[str]) -> int:
    flags = set(argv)
    known = {"--device-auth", "--with-api-key", "status", "-h", "--help"}
    for arg in argv:
        if arg not in known:
            raise UsageError(arg, "login")
    if flags & {"-h", "--help"}:
        out(
            "Manage login\n\nUsage: codex login [OPTIONS] [COMMAND]\n\nCommands:\n"
            "  status  Show login status\n\nOptions:\n"
            "      --with-api-key  Read the API key from stdin (e.g. `printenv OPENAI_API_KEY "
            "| codex login --with-api-key`)\n      --device-auth\n  -h, --help  Print help\n"
        )
        return 0
    if "status" in flags:
        return codex_login.login_status()
    if "--with-api-key" in flags:
        return codex_login.api_key_login()
    server = server_url("codex")
    if "--device-auth" in flags:
        return codex_login.device_login(server)
    return codex_login.browser_login(server)


def cli(argv: list[str]) -> int:
    try:
        if argv[:1] in (["-V"], ["--version"]):
            out(f"codex-cli {VERSION}\n")
            return 0
        if not argv or argv[0] in ("-h", "--help", "help"):
            out(HELP)
            return 0
        command, rest = argv[0], argv[1:]
        if command in ("exec", "e"):
            if rest[:1] in (["-h"], ["--help"]):
                out("Run Codex non-interactively\n\nUsage: codex exec [OPTIONS] [PROMPT]\n")
                return 0
            return exec_cmd(rest)
        if command == "login":
            return login_cmd(rest)
        if command == "logout":
            return codex_login.logout()
        if command.startswith("-"):
            raise UsageError(command, "codex")
        err("codex (remote-cli test bed): the interactive TUI is not faked; use exec or login.\n")
        return 1
    except UsageError as exc:
        err(str(exc))
        return 2


def main() -> None:
    run(cli)
