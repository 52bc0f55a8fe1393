"""Prompt runs over SSE: one provider (``/api/prompts``) or several (``/api/perspectives``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from pydantic import Field, StringConstraints, model_validator

from remotecli.controller import sse
from remotecli.controller.api.deps import Caller, Context
from remotecli.controller.apimodel import ApiModel, ProviderName, UserId
from remotecli.controller.prompts.outcome import RunSpec

router = APIRouter(tags=["prompts"])

#: The agent's own limits (agent/app.py): refused here first, with a clear 422.
MAX_PROMPT_CHARS = 200_000
MAX_TIMEOUT_SECONDS = 3600.0

ModelName = Annotated[str, StringConstraints(pattern=r"^[\w.:/-]{1,100}$")]


class PromptOptions(ApiModel):
    model: ModelName | None = Field(default=None, examples=["gpt-5-codex"])
    permission: Literal["read-only", "workspace-write", "full-access"] | None = None


class PromptBase(ApiModel):
    user_id: UserId = Field(alias="userId")
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS, examples=["hello"])
    options: PromptOptions | None = None
    timeout_seconds: float = Field(default=600.0, gt=0, le=MAX_TIMEOUT_SECONDS,
                                   alias="timeoutSeconds")  # fmt: skip

    def spec(self, provider: str, group_id: str | None = None) -> RunSpec:
        options = self.options.model_dump(exclude_none=True) if self.options else None
        return RunSpec(self.user_id, provider, self.prompt, options or None,
                       self.timeout_seconds, group_id)  # fmt: skip


class PromptIn(PromptBase):
    provider: ProviderName


class PerspectivesIn(PromptBase):
    providers: list[ProviderName] = Field(min_length=1, max_length=3)

    @model_validator(mode="after")
    def _distinct(self) -> PerspectivesIn:
        if len(set(self.providers)) != len(self.providers):
            raise ValueError("each provider may appear once")
        return self


_SSE_EXAMPLE = (
    'event: run\ndata: {"runId":"run_3f9c0e4d2a1b5c6d","vmId":"vm_0a1b2c3d4e5f6a7b",'
    '"provider":"codex","groupId":null}\n\n'
    'event: session\ndata: {"type":"session","sessionId":"6ad3...","model":null}\n\n'
    'event: text\ndata: {"type":"text","text":"You said: hello","thinking":false}\n\n'
    'event: result\ndata: {"type":"result","text":"You said: hello","isError":false,...}\n\n'
    'event: done\ndata: {"runId":"run_3f9c0e4d2a1b5c6d","status":"succeeded","exitCode":0,'
    '"durationMs":212.4,"error":null,"credentialsChanged":false,"credentialsVersion":null,...}\n\n'
)
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "no or invalid API token"},
    403: {"description": "the token may not act for this user"},
    404: {"description": "`unknown_user`"},
    409: {"description": "`not_connected` or `needs_login` (log in with POST /api/auth/start), "
                         "`credentials_busy` (another prompt uses them)"},
    503: {"description": "the CLI VM did not get ready (`vm_not_ready`, with the evidence)"},
}  # fmt: skip


@router.post(
    "/api/prompts",
    response_class=StreamingResponse,
    responses={200: {"description": "SSE: run, the CLI's normalized events, done",
                     "content": {"text/event-stream": {"example": _SSE_EXAMPLE}}},
               **_ERRORS},
)  # fmt: skip
async def run_prompt(body: PromptIn, caller: Caller, context: Context) -> StreamingResponse:
    """Run one prompt with the user's own CLI in their CLI VM; stream its events as SSE.

    Everything that can fail before the CLI starts (no credentials, busy
    credentials, a VM that does not get ready, a refused option) is a JSON
    error with a status; after that, failures are ``error`` events and the
    last event is always ``done``.
    """
    caller.require_user(body.user_id)
    channel = sse.Channel()

    def emit(event: str, data: dict[str, Any]) -> None:
        channel.emit(event, data)
        if event == "done":
            channel.close()

    run = context.prompts().launch(body.spec(body.provider), emit)
    error = await run.started
    if error is not None:
        raise error
    return sse.response(channel, on_hang_up=run.cancel)


@router.post(
    "/api/perspectives",
    response_class=StreamingResponse,
    responses={200: {"description": "SSE: each provider's run, every event tagged with "
                                    "`provider`; a last `end` event",
                     "content": {"text/event-stream": {}}},
               **_ERRORS},
)  # fmt: skip
async def run_perspectives(
    body: PerspectivesIn, caller: Caller, context: Context
) -> StreamingResponse:
    """Run one prompt on several providers in parallel, streamed side by side.

    Each provider has its own run and lease; one that fails (not connected,
    busy, a CLI error) reports ``error`` and ``done`` for itself while the
    others go on. The stream ends with ``end`` listing every run's status.
    """
    caller.require_user(body.user_id)
    service = context.prompts()
    await service.require_user(body.user_id)  # one 404 rather than one error per provider
    group = service.new_group_id()
    channel = sse.Channel()
    runs = service.perspectives([body.spec(p, group) for p in body.providers], channel)

    def hang_up() -> None:
        for run in runs:
            run.cancel()

    return sse.response(channel, on_hang_up=hang_up)
