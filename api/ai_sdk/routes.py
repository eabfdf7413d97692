"""`POST /ai-sdk/chat` and `GET /ai-sdk/chat/{chat id}/stream`: what the AI SDK's `DefaultChatTransport`
sends and reconnects to.

Deliberate choices (read before changing):
- Each POST runs one job (through `start_job`, like `POST /v1/jobs`) for the chat's next assistant
  message, and records it as the chat's latest job, per API key, for as long as the job is kept.
- The reconnect route streams that job from its first event (running or finished), or answers 204
  when the chat has none: a reload mid-answer gets the whole message, each chunk once.
- Unknown fields are ignored, and so are message parts other than text (the SDK adds its own).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from tokenrelay.core import protocol
from tokenrelay.core.keys import CHAT_ID_PATTERN
from tokenrelay.errors import InvalidRequest, JobNotFound

from ..auth import principal_of
from ..errors import ERROR_RESPONSES
from ..openai_compat import JOB_ID_HEADER, job_events
from ..quotas import counted_in_submit
from ..routes import _check_readable, start_job
from ..event_stream import EventStreamResponse
from ..sse_response import SSE_HEADERS, event_stream
from ..schemas import GenerationParams, JobRequest
from .chunks import DONE_FRAME, UIMessageChunks, frame

router = APIRouter(tags=["Vercel AI SDK"])

STREAM_HEADERS = {**SSE_HEADERS, "x-vercel-ai-ui-message-stream": "v1"}
DEFAULT_MODEL = "demo"


class UIPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: str
    text: str | None = None


class UIMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant"]
    parts: list[UIPart] = Field(default_factory=list)

    def text(self) -> str:
        return "".join(part.text or "" for part in self.parts if part.type == "text")


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str = Field(pattern=f"^{CHAT_ID_PATTERN.pattern}$", description="The chat's id (the SDK makes one).")
    messages: list[UIMessage] = Field(min_length=1)
    trigger: str | None = None
    messageId: str | None = None  # noqa: N815 - the SDK's name
    model: str | None = Field(default=None, min_length=1, max_length=200)
    max_tokens: int | None = Field(default=None, ge=1, strict=True)
    tokens_per_second: float | None = Field(default=None, ge=0, le=100_000)

    def to_job(self, models: list[str]) -> JobRequest:
        messages = [{"role": m.role, "content": m.text()} for m in self.messages if m.text()]
        if not any(m["role"] == "user" for m in messages):
            raise InvalidRequest("`messages` must hold a user message with text", param="messages")
        model = self.model or (DEFAULT_MODEL if DEFAULT_MODEL in models else models[0])
        params = GenerationParams(max_tokens=self.max_tokens, tokens_per_second=self.tokens_per_second)
        return JobRequest(model=model, messages=messages, params=params, metadata={"api": "ai-sdk", "chat_id": self.id})


async def _chunks(request: Request, job_id: str) -> AsyncIterator[bytes]:
    translator = UIMessageChunks(job_id)
    yield b"".join(frame(chunk) for chunk in translator.opening())
    async for event in job_events(request, job_id):
        if event is None:
            yield protocol.KEEPALIVE_FRAME
            continue
        frames = b"".join(frame(chunk) for chunk in translator.feed(event.event, event.data))
        if translator.done:
            yield frames + DONE_FRAME
            return
        if frames:
            yield frames


def _stream(request: Request, job_id: str) -> EventStreamResponse:
    return event_stream(request, job_id, _chunks(request, job_id), {**STREAM_HEADERS, JOB_ID_HEADER: job_id})


def _chat_key(request: Request, chat_id: str) -> str:
    return request.app.state.keys.chat(principal_of(request).name, chat_id)


STREAM_DOC = {"content": {"text/event-stream": {}}, "description": "The UI message stream (`data:` JSON chunks, "
              "then `data: [DONE]`), header `x-vercel-ai-ui-message-stream: v1`."}


@router.post("/ai-sdk/chat", responses={200: STREAM_DOC, **{c: ERROR_RESPONSES[c] for c in (400, 401, 413, 429, 503)}},
             summary="Run the chat's next assistant message as a job and stream it (AI SDK UI message stream)")
@counted_in_submit
async def chat(body: ChatRequest, request: Request) -> EventStreamResponse:
    state = request.app.state
    key = _chat_key(request, body.id)
    record, _ = await start_job(body.to_job(state.settings.models), request, "max_tokens")
    async with state.redis.pipeline(transaction=True) as pipe:
        pipe.hset(key, "job", record.id)
        pipe.expire(key, int(state.settings.retention_s + state.settings.job_timeout_s))
        await pipe.execute()
    return _stream(request, record.id)


@router.get("/ai-sdk/chat/{chat_id}/stream",
            responses={200: STREAM_DOC, 204: {"description": "The chat has no job to resume."},
                       **{c: ERROR_RESPONSES[c] for c in (400, 401, 429, 503)}},
            summary="Resume the chat's latest job from its start (AI SDK reconnect)")
async def resume(chat_id: str, request: Request) -> Any:
    if not CHAT_ID_PATTERN.fullmatch(chat_id):
        raise InvalidRequest("chat id must be 1-128 letters, digits, '_' or '-'", param="chat_id")
    raw = await request.app.state.redis.hget(_chat_key(request, chat_id), "job")
    if raw is None:
        return Response(status_code=204)
    job_id = raw.decode()
    try:
        await _check_readable(request, job_id)
    except JobNotFound:  # expired with its job
        return Response(status_code=204)
    return _stream(request, job_id)
