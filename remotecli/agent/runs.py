"""Prompt runs: the CLI headless with pipes, its stream parsed into normalized events.

A run is an async generator of the wire's typed events (``wire.RunEvent``),
streamed as NDJSON: ``run.started``, the provider's normalized events, then
``run.finished`` with
the exit code and the credentials' content version (the controller syncs the
files back when it changed: Claude and Codex rotate refresh tokens). A run
has a deadline (Codex offline never exits by itself), and it is stopped, with
its whole process group, on ``DELETE /prompts/{id}`` or when the client hangs
up.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import secrets
import time
from collections.abc import AsyncGenerator

from remotecli.agent.config import AgentConfig
from remotecli.agent.credentials import CredentialStore
from remotecli.agent.errors import NotFound
from remotecli.agent.log import log, redact
from remotecli.agent.process import spawn, stop_group
from remotecli.agent.wire import RunEvent, RunFinished, RunInfo, RunStarted
from remotecli.providers import Provider
from remotecli.providers.base import LoginMode, PromptOptions
from remotecli.providers.events import Error

STDERR_TAIL_BYTES = 4096
_LOGIN_AGAIN = frozenset({"auth_required", "refresh_failed"})


class PromptRun:
    def __init__(
        self,
        provider: Provider,
        prompt: str,
        options: PromptOptions,
        *,
        api_key: str | None,
        timeout: float,
    ) -> None:
        self.id = secrets.token_urlsafe(12)
        self.provider = provider
        self.prompt = prompt
        self.options = options
        self.api_key = api_key
        self.timeout = timeout
        self.started_at = time.time()
        self.cancelled = asyncio.Event()
        self.exit_code: int | None = None

    def to_wire(self) -> RunInfo:
        return RunInfo(
            run_id=self.id,
            provider=self.provider.name,
            started_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started_at)),
            exit_code=self.exit_code,
        )

    async def events(
        self, config: AgentConfig, store: CredentialStore, disconnected: asyncio.Event
    ) -> AsyncGenerator[RunEvent, None]:
        provider = self.provider
        mode = LoginMode.API_KEY if self.api_key else provider.login_modes[0]
        store.prepare(provider, mode)
        before = store.version(provider)
        command = provider.prompt_command(self.prompt, self.options)
        api_key = (provider.api_key_env, self.api_key) if self.api_key else None
        env = config.child_env(command.env, api_key=api_key)
        t0 = time.monotonic()
        proc, _ = await spawn(
            command.argv, env=env, cwd=str(config.workspace), run_as=config.run_as, pty=False
        )
        log("run.started", run=self.id, provider=provider.name, pid=proc.pid)
        yield RunStarted(run_id=self.id, provider=provider.name)
        assert proc.stdout is not None and proc.stderr is not None
        stderr_tail: collections.deque[bytes] = collections.deque()
        stderr_task = asyncio.create_task(_collect_tail(proc.stderr, stderr_tail))
        parser = provider.stream_parser()
        stop_reason: str | None = None
        lines = _lines_until(proc.stdout, t0 + self.timeout, self.cancelled, disconnected)
        try:
            async for line in lines:
                if isinstance(line, _Stop):
                    stop_reason = line.reason
                    break
                for event in parser.feed(line):
                    yield event
                    if isinstance(event, Error) and event.code in _LOGIN_AGAIN:
                        # Claude retries a 401 for minutes; the user must log in
                        # again, so waiting helps nobody.
                        stop_reason = "login_again"
                if stop_reason is not None:
                    break
            await lines.aclose()
            if stop_reason is not None:
                await stop_group(proc)
            exit_code = await proc.wait()
            # The CLI is gone; whatever it left in its group must go too.
            await stop_group(proc)
            await asyncio.wait_for(stderr_task, 2.0)
            self.exit_code = exit_code
            tail = redact(b"".join(stderr_tail).decode(errors="replace"))[-STDERR_TAIL_BYTES:]
            if stop_reason == "timeout":
                yield Error(
                    message=f"the run took longer than {self.timeout:.0f} s and was stopped",
                    code="timeout",
                    exit_code=exit_code,
                    stderr_tail=tail or None,
                )
            elif stop_reason in ("cancelled", "disconnected"):
                yield Error(message="the run was cancelled", code="cancelled", exit_code=exit_code)
            elif stop_reason is None:
                for event in parser.finish(exit_code, tail):
                    yield event
            after = store.version(provider)
            yield RunFinished(
                run_id=self.id,
                exit_code=exit_code,
                duration_ms=round((time.monotonic() - t0) * 1000, 1),
                credentials_version=after,
                credentials_changed=after != before,
            )
            log(
                "run.finished",
                run=self.id,
                provider=provider.name,
                exit_code=exit_code,
                stopped=stop_reason,
            )
        finally:
            # Also reached when the client hangs up mid-stream (generator closed).
            await lines.aclose()
            await stop_group(proc)
            stderr_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await stderr_task


class _Stop:
    def __init__(self, reason: str) -> None:
        self.reason = reason


async def _lines_until(
    stream: asyncio.StreamReader,
    deadline: float,
    cancelled: asyncio.Event,
    disconnected: asyncio.Event,
) -> AsyncGenerator[str | _Stop, None]:
    """Lines of ``stream`` until EOF; a ``_Stop`` on deadline, cancel or hang-up."""
    stops = {
        asyncio.create_task(cancelled.wait()): "cancelled",
        asyncio.create_task(disconnected.wait()): "disconnected",
    }
    try:
        while True:
            reader = asyncio.create_task(stream.readline())
            remaining = deadline - time.monotonic()
            done, _ = await asyncio.wait(
                {reader, *stops}, timeout=max(0.0, remaining), return_when=asyncio.FIRST_COMPLETED
            )
            if reader not in done:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, ValueError):
                    await reader
                stopped = [reason for task, reason in stops.items() if task in done]
                yield _Stop(stopped[0] if stopped else "timeout")
                return
            try:
                raw = reader.result()
            except ValueError:  # a line over the reader's limit: skip it, keep going
                continue
            if not raw:
                return
            yield raw.decode(errors="replace").rstrip("\r\n")
    finally:
        for task in stops:
            task.cancel()


async def _collect_tail(stream: asyncio.StreamReader, tail: collections.deque[bytes]) -> None:
    size = 0
    while chunk := await stream.read(4096):
        tail.append(chunk)
        size += len(chunk)
        while size > STDERR_TAIL_BYTES and len(tail) > 1:
            size -= len(tail.popleft())


class RunManager:
    def __init__(self) -> None:
        self._runs: dict[str, PromptRun] = {}

    def add(self, run: PromptRun) -> None:
        self._runs[run.id] = run

    def remove(self, run: PromptRun) -> None:
        self._runs.pop(run.id, None)

    def get(self, run_id: str) -> PromptRun:
        try:
            return self._runs[run_id]
        except KeyError:
            raise NotFound(f"no running prompt {run_id!r} in this VM", code="unknown_run") from None

    def all(self) -> list[PromptRun]:
        return list(self._runs.values())

    def cancel_all(self) -> None:
        for run in self._runs.values():
            run.cancelled.set()
