"""OpenAI-compatible endpoints: `POST /v1/chat/completions` and `GET /v1/models`.

Deliberate choices (read before changing):
- Each request is an ordinary tokenrelay job, submitted through the same `start_job` as
  `POST /v1/jobs`, and read through the process's relay like any other reader: the answer carries
  `X-Tokenrelay-Job-Id`, so a client whose connection dropped can re-attach at
  `/v1/jobs/{id}/stream`. Closing the connection does not cancel the job, for the same reason.
- The job is read as decoded events (`Relay.follow_events`), not as SSE bytes parsed back into
  events: the relay's ordering, resume and slow-reader rules hold, with no SSE round trip.
- A `token` event that carries several tokens (`count` > 1) becomes one chunk with their text.
- The first chunk carries the role and is sent at once; `finish_reason` comes in the last chunk
  with an empty delta; with `stream_options.include_usage` every chunk has `"usage": null` and
  one more chunk with no choices carries the usage. Then `data: [DONE]`. This is OpenAI's order.
- After a `reset` (the job restarted on another worker) the new attempt's text is sent only past
  what the client already has, as long as it agrees with it; if it disagrees the stream ends with
  an error chunk, since a chat completion stream cannot take text back.
- A failed job answers 5xx with `x-should-retry: false`: the SDK would otherwise run it again.
- A `tool_call` event (a call the model finished writing) becomes one chunk whose `delta.tool_calls`
  holds the whole call, arguments included: the SDK and `ChatOpenAI` join deltas by `index`, so one
  delta per call is as valid as OpenAI's many. Arguments are relayed as the model wrote them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse, StreamingResponse

from redis.exceptions import RedisError

from tokenrelay.core import protocol
from tokenrelay.core.protocol import EventId
from tokenrelay.core.registry import TOOL_CALL
from tokenrelay.events import Event

from .answer import Answer
from .errors import ERROR_RESPONSES
from .openai_schemas import ChatCompletionRequest
from .quotas import counted_in_submit
from .routes import REPLAYED_HEADER, start_job
from .sse_response import SSE_HEADERS, STREAM_RETRY_DELAY_S, STREAM_RETRY_S

router = APIRouter(tags=["OpenAI-compatible"])

JOB_ID_HEADER = "X-Tokenrelay-Job-Id"
DONE_LINE = b"data: [DONE]\n\n"
# A failed job's error type -> HTTP status of a non-streaming answer.
FAILURE_STATUS = {"timeout": 504, "provider_error": 502, "provider_unavailable": 502}


def _data_line(body: dict[str, Any]) -> bytes:
    return b"data: " + protocol.dumps(body).encode() + b"\n\n"


def _usage(end: dict[str, Any]) -> dict[str, int]:
    usage = end.get("usage") or {}
    prompt, completion = int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0))
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": int(usage.get("total_tokens", prompt + completion))}


def _error_body(message: str, error_type: str, code: str | None = None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def openai_tool_call(call: dict[str, Any]) -> dict[str, Any]:
    """A `tool_call` event's call in OpenAI's shape (arguments as a JSON string)."""
    args = call["args"]
    arguments = args if isinstance(args, str) else protocol.dumps(args)
    return {"id": call["id"], "type": "function", "function": {"name": call["name"], "arguments": arguments}}


async def job_events(request: Request, job_id: str) -> AsyncIterator[Event | None]:
    """A job's events from its start through the process's relay; None for each keepalive. Redis
    errors are retried from the last event for STREAM_RETRY_S, then the answer is an error."""
    last: EventId | None = None
    give_up_at: float | None = None
    while True:
        try:
            async for event in request.app.state.relay.follow_events(job_id, last):
                if event is not None and event.id:
                    last, give_up_at = EventId.parse(event.id), None
                yield event
            return
        except RedisError:
            now = time.monotonic()
            give_up_at = give_up_at or now + STREAM_RETRY_S
            if now >= give_up_at:
                yield Event(id=None, event=protocol.ERROR, data={
                    "type": "stream_unavailable",
                    "message": f"the job store stopped answering; the job goes on: read it at /v1/jobs/{job_id}"})
                yield Event(id=None, event=protocol.END, data={"status": "interrupted", "usage": None,
                                                               "finish_reason": None})
                return
            await asyncio.sleep(STREAM_RETRY_DELAY_S)


class _Chunks:
    """`chat.completion.chunk` lines of one completion."""

    def __init__(self, completion_id: str, created: int, model: str, include_usage: bool) -> None:
        self.base = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                     "system_fingerprint": None}
        self.include_usage = include_usage

    def choice(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        body = {**self.base, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                          "finish_reason": finish_reason}]}
        if self.include_usage:
            body["usage"] = None
        return _data_line(body)

    def usage(self, end: dict[str, Any]) -> bytes:
        return _data_line({**self.base, "choices": [], "usage": _usage(end)})


def _reset_error(job_id: str) -> bytes:
    return _data_line(_error_body(f"the job restarted with a different answer; read it at /v1/jobs/{job_id}",
                                  "stream_reset", "stream_reset"))


async def _stream(request: Request, job_id: str, chunks: _Chunks) -> AsyncIterator[bytes]:
    yield chunks.choice({"role": "assistant", "content": "", "refusal": None})
    answer = Answer()
    async for event in job_events(request, job_id):
        if event is None:
            yield protocol.KEEPALIVE_FRAME
        elif event.event == protocol.TOKEN:
            new = answer.add(event.data["text"])
            if new is None:
                yield _reset_error(job_id)
                return
            if new:
                yield chunks.choice({"content": new})
        elif event.event == TOOL_CALL:
            new = answer.add_call(event.data)
            if new is None:
                yield _reset_error(job_id)
                return
            if new:
                yield chunks.choice({"tool_calls": [{"index": event.data["index"], **openai_tool_call(event.data)}]})
        elif event.event == protocol.RESET:
            answer.reset()
        elif event.event == protocol.ERROR:
            yield _data_line(_error_body(event.data.get("message", "the job failed"), event.data.get("type", "error")))
            return
        elif event.event == protocol.END:
            yield chunks.choice({}, event.data.get("finish_reason") or "stop")
            if chunks.include_usage:
                yield chunks.usage(event.data)
            yield DONE_LINE
            return


async def _complete(request: Request, job_id: str, base: dict[str, Any], headers: dict[str, str]) -> JSONResponse:
    parts: list[str] = []
    calls: list[dict[str, Any]] = []
    error: dict[str, Any] | None = None
    async for event in job_events(request, job_id):
        if event is None:
            continue
        if event.event == protocol.TOKEN:
            parts.append(event.data["text"])
        elif event.event == TOOL_CALL:
            calls.append(openai_tool_call(event.data))
        elif event.event == protocol.RESET:
            parts.clear()
            calls.clear()
        elif event.event == protocol.ERROR:
            error = event.data
        elif event.event == protocol.END:
            if error is not None:
                status = FAILURE_STATUS.get(error.get("type", ""), 500)
                body = _error_body(error.get("message", "the job failed"), error.get("type", "error"))
                return JSONResponse(body, status_code=status, headers={**headers, "x-should-retry": "false"})
            message = {"role": "assistant", "content": "".join(parts) or (None if calls else ""), "refusal": None}
            if calls:
                message["tool_calls"] = calls
            choice = {"index": 0, "message": message, "logprobs": None,
                      "finish_reason": event.data.get("finish_reason") or "stop"}
            body = {**base, "object": "chat.completion", "system_fingerprint": None, "choices": [choice],
                    "usage": _usage(event.data)}
            return JSONResponse(body, headers=headers)
    # The relay cut this reader off (it fell too far behind): the job goes on; say where to find it.
    body = _error_body(f"the answer was interrupted; read it at /v1/jobs/{job_id}", "stream_interrupted")
    return JSONResponse(body, status_code=503, headers={**headers, "Retry-After": "1"})


@router.post(
    "/v1/chat/completions",
    responses={200: {"content": {"text/event-stream": {}}, "description": "A `chat.completion`, or with "
                     "`stream: true` `chat.completion.chunk` lines ending with `data: [DONE]`."},
               404: {"model": ERROR_RESPONSES[404]["model"], "description": "Unknown model."},
               **{code: ERROR_RESPONSES[code] for code in (400, 409, 413, 422, 503)}},
    summary="OpenAI-compatible chat completion (runs as a tokenrelay job)",
)
@counted_in_submit
async def chat_completions(
    body: ChatCompletionRequest, request: Request,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", description="Makes the request safe to "
                               "retry: a repeat with the same body gets the same job's answer.")] = None,
):
    settings = request.app.state.settings
    if body.model not in settings.models:
        message = f"The model `{body.model}` does not exist. Available: {', '.join(settings.models)}"
        return JSONResponse(_error_body(message, "invalid_request_error", "model_not_found", "model"), status_code=404)
    created = int(time.time())
    record, repeated = await start_job(body.to_job(), request, body.max_tokens_field, idempotency_key)
    completion_id = f"chatcmpl-{record.id}"
    headers = {JOB_ID_HEADER: record.id, **({REPLAYED_HEADER: "true"} if repeated else {})}
    if not body.stream:
        return await _complete(request, record.id, {"id": completion_id, "created": created, "model": body.model},
                               headers)
    chunks = _Chunks(completion_id, created, body.model, body.include_usage)
    return StreamingResponse(_stream(request, record.id, chunks), media_type="text/event-stream",
                             headers={**SSE_HEADERS, **headers})


def _model_card(name: str, created: int) -> dict[str, Any]:
    owner = "openai" if name.startswith("openai:") else "tokenrelay"
    return {"id": name, "object": "model", "created": created, "owned_by": owner}


@router.get("/v1/models", summary="The models a client may name (OpenAI format)")
async def list_models(request: Request) -> dict[str, Any]:
    settings = request.app.state.settings
    created = request.app.state.started_at
    return {"object": "list", "data": [_model_card(name, created) for name in settings.models]}


@router.get("/v1/models/{model_id:path}", responses={404: ERROR_RESPONSES[404]}, summary="One model (OpenAI format)")
async def get_model(model_id: str, request: Request):
    if model_id not in request.app.state.settings.models:
        return JSONResponse(_error_body(f"The model `{model_id}` does not exist", "invalid_request_error",
                                        "model_not_found", "model"), status_code=404)
    return _model_card(model_id, request.app.state.started_at)
