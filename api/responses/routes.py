"""OpenAI's Responses API, background mode included: each response is a tokenrelay job.

Deliberate choices (read before changing):
- A response is submitted through the same `start_job` as `POST /v1/jobs` (ownership, quotas,
  limits). What only this API needs (instructions, input items, `previous_response_id`, `store`...)
  is stored in the job's request under `responses`, so it lives and expires with the job.
- Every stream is translated from the job's first event (api/responses/events.py), and events up to
  `starting_after` are dropped here: numbering never depends on where a reader joined.
- Closing a stream never cancels the job; `store: false` (not with `background`) deletes the job once
  its answer was delivered.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from tokenrelay.core import protocol
from tokenrelay.core.status import CancelOutcome, JobStatus
from tokenrelay.core.store import JobRecord, delete_job
from tokenrelay.errors import InvalidRequest, JobNotFound, TokenRelayError

from ..errors import ERROR_RESPONSES
from ..openai_compat import JOB_ID_HEADER, job_events
from ..quotas import counted_in_submit
from ..routes import REPLAYED_HEADER, _record, start_job
from ..event_stream import EventStreamResponse
from ..sse_response import SSE_HEADERS, event_stream
from ..schemas import GenerationParams, JobRequest
from .events import ResponseEvents, final_status, record_output, response_object, sse
from .schemas import ResponseRequest, item_messages

router = APIRouter(tags=["OpenAI Responses"])

RESPONSE_ID = re.compile(r"resp_([0-9a-f]{32})")
# Cancel and delete wait this long for the worker to stop, so they can answer with the final status.
CANCEL_WAIT_S = 5.0
MAX_INPUT_ITEMS_PAGE = 100


class ResponseNotFound(TokenRelayError):
    """Raised when a response id names no response the caller may read."""

    status_code = 404
    error_type = "not_found_error"

    def __init__(self, response_id: str) -> None:
        super().__init__(f"response {response_id[:64]} not found (unknown, or expired after retention)",
                         param="response_id")


def _responses(*codes: int) -> dict:
    return {code: ERROR_RESPONSES[code] for code in codes}


def _error(message: str, error_type: str, code: str | None = None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


async def _load(request: Request, response_id: str) -> tuple[JobRecord, dict[str, Any]]:
    match = RESPONSE_ID.fullmatch(response_id)
    if not match:
        raise ResponseNotFound(response_id)
    try:
        record = await _record(request, match.group(1))
    except JobNotFound:
        raise ResponseNotFound(response_id) from None
    doc = record.request.get("responses")
    if doc is None:  # a job submitted through another API
        raise ResponseNotFound(response_id)
    return record, doc


def _view(record: JobRecord, doc: dict[str, Any]) -> dict[str, Any]:
    status = final_status(record.status, record.finish_reason, doc.get("max_output_tokens") is not None)
    text = record.output_text if record.finished and (record.output_text or status == "completed") else None
    calls = record.output_tool_calls if record.finished else None
    error = None
    if status == "failed":
        error = {"code": (record.error or {}).get("type", "error"),
                 "message": (record.error or {}).get("message", "the job failed")}
    return response_object(record.id, record.model, doc, status, output=record_output(record.id, text, calls, status),
                           usage=record.usage if record.finished else None, error=error)


def _json(body: dict[str, Any], job_id: str, status_code: int = 200, headers: dict[str, str] | None = None
          ) -> JSONResponse:
    return JSONResponse(body, status_code=status_code, headers={JOB_ID_HEADER: job_id, **(headers or {})})


async def _conversation(request: Request, body: ResponseRequest) -> list[dict[str, Any]]:
    """The earlier response's input and output (not its instructions), as OpenAI chains them: its tool
    calls are the assistant message's `tool_calls`."""
    if body.previous_response_id is None:
        return []
    try:
        record, doc = await _load(request, body.previous_response_id)
    except ResponseNotFound as exc:
        exc.param = "previous_response_id"
        raise
    if not record.finished:
        raise InvalidRequest(f"previous response {body.previous_response_id} is still {record.status}",
                             param="previous_response_id")
    history = record.request.get("messages", [])[1 if doc.get("instructions") else 0:]
    calls = [{key: call[key] for key in ("id", "name", "args")} for call in record.output_tool_calls or ()]
    if record.output_text or calls:
        answer: dict[str, Any] = {"role": "assistant", "content": record.output_text or ""}
        if calls:
            answer["tool_calls"] = calls
        history = [*history, answer]
    return history


async def _cancel(request: Request, job_id: str) -> None:
    """Cancel the job; when a worker runs it, wait (a bounded time) for it to stop."""
    state = request.app.state
    cancelled = await state.scripts.cancel(job_id, state.settings.retention_s)
    if cancelled.outcome != CancelOutcome.CANCELLING:
        return
    await state.redis.publish(state.keys.cancel_channel, job_id)
    try:
        async with asyncio.timeout(CANCEL_WAIT_S):
            async for _ in job_events(request, job_id):
                pass
    except TimeoutError:
        pass


async def _translated(request: Request, record: JobRecord, doc: dict[str, Any],
                      starting_after: int) -> AsyncIterator[bytes]:
    translator = ResponseEvents(record.id, record.model, doc)
    opening = b"".join(sse(e) for e in translator.opening() if e["sequence_number"] > starting_after)
    if opening:
        yield opening
    async for event in job_events(request, record.id):
        if event is None:
            yield protocol.KEEPALIVE_FRAME
            continue
        if event.id is None:  # the gateway lost the job store: end here; the client resumes with starting_after
            break
        frames = b"".join(sse(e) for e in translator.feed(event.event, event.data)
                          if e["sequence_number"] > starting_after)
        if frames:
            yield frames
        if translator.done:
            break
    if translator.done and not doc.get("store", True):
        await delete_job(request.app.state.redis, request.app.state.keys, record.id)


def _stream(request: Request, record: JobRecord, doc: dict[str, Any], starting_after: int = -1,
            headers: dict[str, str] | None = None) -> EventStreamResponse:
    return event_stream(request, record.id, _translated(request, record, doc, starting_after),
                        {**SSE_HEADERS, JOB_ID_HEADER: record.id, **(headers or {})})


async def _blocking(request: Request, record: JobRecord, doc: dict[str, Any], headers: dict[str, str]) -> JSONResponse:
    ended = False
    async for event in job_events(request, record.id):
        ended = event is not None and event.event == protocol.END and event.id is not None
    if not ended:  # the relay cut this reader off, or the job store stopped answering; the job goes on
        body = _error(f"the answer was interrupted; read it at /v1/responses/resp_{record.id}", "stream_interrupted")
        return _json(body, record.id, 503, {**headers, "Retry-After": "1"})
    state = request.app.state
    record, _ = await _load(request, f"resp_{record.id}")
    if not doc.get("store", True):
        await delete_job(state.redis, state.keys, record.id)
    return _json(_view(record, doc), record.id, headers=headers)


def _refusal(exc: ValidationError) -> tuple[str, str]:
    """The job format's refusal of a tool or a call, in the Responses API's names: `tools[<i>]` or `input`."""
    error = exc.errors()[0]
    loc = [str(part) for part in error.get("loc", ())]
    param = f"tools[{loc[1]}]" if loc[:1] == ["tools"] and len(loc) > 1 else "input"
    where = "".join(f"[{part}]" if part.isdigit() else f".{part}" for part in loc).lstrip(".")
    where = where.replace("].function.", "].", 1)  # the job nests a tool under `function`; Responses does not
    return f"{where}: {error.get('msg', 'invalid')}".removeprefix(": "), param


SSE_DOC = {"content": {"text/event-stream": {}}, "description": "The response object, or with `stream: true` "
           "its events (response.created ... response.completed), each with a stable `sequence_number`."}


@router.post("/v1/responses", responses={200: SSE_DOC, 404: {**ERROR_RESPONSES[404], "description": "Unknown model."},
                                         **_responses(400, 401, 413, 429, 503)},
             summary="Create a response (OpenAI Responses API; background mode supported)")
@counted_in_submit
async def create_response(
    body: ResponseRequest, request: Request,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", description="Makes the request safe to "
                               "retry: a repeat with the same body gets the same response.")] = None,
):
    settings = request.app.state.settings
    body.check_supported()
    if body.model not in settings.models:
        message = f"The model `{body.model}` does not exist. Available: {', '.join(settings.models)}"
        return JSONResponse(_error(message, "invalid_request_error", "model_not_found", "model"), status_code=404)
    items = body.input_items()
    messages = await _conversation(request, body) + item_messages(items)
    if body.instructions:
        messages.insert(0, {"role": "system", "content": body.instructions})
    if not any(m["role"] != "system" for m in messages):
        raise InvalidRequest("`input` must hold some text", param="input")
    tool_fields = body.job_tool_fields()
    doc = {"created_at": int(time.time()), "instructions": body.instructions, "input": items,
           "previous_response_id": body.previous_response_id, "max_output_tokens": body.max_output_tokens,
           "temperature": body.temperature, "metadata": body.metadata or {}, "store": body.store,
           "background": body.background}
    if "tools" in tool_fields:
        doc.update(tools=body.tools, tool_choice=body.tool_choice or "auto",
                   parallel_tool_calls=tool_fields.get("parallel_tool_calls", True))
    params = GenerationParams(max_tokens=body.max_output_tokens, temperature=body.temperature,
                              tokens_per_second=body.tokens_per_second)
    try:
        job = JobRequest(model=body.model, messages=messages, params=params, **tool_fields,
                         metadata={**(body.metadata or {}), "api": "responses"})
    except ValidationError as exc:  # a tool or a call the job format refuses (a bad name, say)
        message, param = _refusal(exc)
        raise InvalidRequest(message, param=param) from None
    try:
        record, repeated = await start_job(job, request, "max_output_tokens", idempotency_key, extra={"responses": doc})
    except InvalidRequest as exc:  # name the Responses field, not the job's
        if exc.param == "messages":
            exc.param = "input"
        elif exc.param and exc.param.startswith("tools."):
            exc.param = "tools[{}]".format(exc.param.split(".")[1])
        raise
    doc = record.request.get("responses", doc)  # a repeat answers with the first request's response
    headers = {REPLAYED_HEADER: "true"} if repeated else {}
    if body.stream:
        return _stream(request, record, doc, headers=headers)
    if body.background:
        return _json(_view(record, doc), record.id, headers=headers)
    return await _blocking(request, record, doc, headers)


@router.get("/v1/responses/{response_id}", responses={200: SSE_DOC, **_responses(400, 401, 404, 429, 503)},
            summary="A response, or with `stream=true` its events after `starting_after`")
async def get_response(
    response_id: str,
    request: Request,
    stream: bool = False,
    starting_after: Annotated[int, Query(ge=-1, description="Resume after this sequence number.")] = -1,
):
    record, doc = await _load(request, response_id)
    if stream:
        return _stream(request, record, doc, starting_after)
    return _json(_view(record, doc), record.id)


@router.post("/v1/responses/{response_id}/cancel", responses=_responses(400, 401, 404, 429, 503),
             summary="Cancel a background response")
async def cancel_response(response_id: str, request: Request) -> JSONResponse:
    record, doc = await _load(request, response_id)
    if record.finished and record.status != JobStatus.CANCELLED:
        message = f"Cannot cancel a {_view(record, doc)['status']} response."
        return _json(_error(message, "invalid_request_error", param="response_id"), record.id, 400)
    await _cancel(request, record.id)
    record, doc = await _load(request, response_id)
    return _json(_view(record, doc), record.id)


@router.delete("/v1/responses/{response_id}", responses=_responses(400, 401, 404, 429, 503),
               summary="Delete a response (a running one is cancelled first)")
async def delete_response(response_id: str, request: Request) -> JSONResponse:
    state = request.app.state
    record, _ = await _load(request, response_id)
    if not record.finished:
        await _cancel(request, record.id)
    await delete_job(state.redis, state.keys, record.id)
    return _json({"id": response_id, "object": "response.deleted", "deleted": True}, record.id)


@router.get("/v1/responses/{response_id}/input_items", responses=_responses(400, 401, 404, 429, 503),
            summary="The input items of a response")
async def input_items(
    response_id: str,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=MAX_INPUT_ITEMS_PAGE)] = 20,
    order: Annotated[str, Query(pattern="^(asc|desc)$")] = "desc",
    after: Annotated[str | None, Query(max_length=100)] = None,
) -> JSONResponse:
    record, doc = await _load(request, response_id)
    items = [{"id": f"msg_{record.id}_{index}", "status": "completed", **item}
             for index, item in enumerate(doc.get("input", []))]
    if order == "desc":
        items.reverse()
    if after is not None:
        ids = [item["id"] for item in items]
        if after not in ids:
            raise InvalidRequest(f"`after` names no input item of {response_id}", param="after")
        items = items[ids.index(after) + 1:]
    page = items[:limit]
    body = {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None, "has_more": len(items) > limit}
    return _json(body, record.id)
