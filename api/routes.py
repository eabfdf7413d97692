"""The HTTP routes: thin views over the job store, the broker and the relay."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse

from tokenrelay.core import protocol
from tokenrelay.core.protocol import EventId
from tokenrelay.core.registry import check_model
from tokenrelay.core.status import CancelOutcome
from tokenrelay.core.store import JobRecord, load_job, load_owner
from tokenrelay.errors import (
    IdempotencyKeyInUse,
    InvalidEventId,
    InvalidRequest,
    JobNotFound,
)

from . import idempotency
from .admission import Submission, admit, earlier_job_id
from .auth import principal_of
from .errors import ERROR_RESPONSES
from .event_stream import EventStreamResponse
from .filters import StreamFilter
from .graph_jobs import graph_request
from .quotas import COUNT_FIELD, counted_in_submit
from .schemas import CancelResult, Health, JobCreated, JobRequest, JobView, Readiness
from .sse_response import sse_response

log = logging.getLogger("tokenrelay.gateway")

router = APIRouter()

# While Redis or the broker is unreachable, answer 503 within this long instead of hanging.
READY_TIMEOUT_S = 2.0
REPLAYED_HEADER = "Idempotent-Replayed"


def _responses(*codes: int) -> dict:
    return {code: ERROR_RESPONSES[code] for code in codes}


def _stream_url(job_id: str) -> str:
    return f"/v1/jobs/{job_id}/stream"


def _view(record: JobRecord) -> JobView:
    return JobView(
        id=record.id,
        status=record.status,
        model=record.model,
        created_at=record.created_at,
        started_at=record.started_at,
        finished_at=record.finished_at,
        attempt=record.attempt,
        output={"text": record.output_text if record.finished else None,
                "tool_calls": record.output_tool_calls if record.finished else None,
                "state": record.output_state if record.finished else None},
        usage=record.usage,
        error=record.error,
        finish_reason=record.finish_reason or None,
        metadata=record.metadata,
        graph=record.request.get("graph"),
    )


def _check_access(request: Request, job_id: str, found: bool, owner: str | None) -> None:
    principal = principal_of(request)
    # Another key's job is a 404, like an unknown one: job ids must not be probeable.
    if not found or not principal.may_access(owner):
        raise JobNotFound(job_id)
    if principal.job_id is not None and principal.job_id != job_id:
        raise JobNotFound(job_id)


async def _check_readable(request: Request, job_id: str) -> str:
    """The job exists and the caller may read it; its owner. Only the owner field is read: the record
    holds the whole request, and reading it for another key's job would make a foreign id answer
    measurably slower than an unknown one. No Redis round trip at all when this process is relaying
    the job to other readers already: a burst of joins on one job asks Redis once."""
    state = request.app.state
    owner = state.relay.owner_of(protocol.check_job_id(job_id))
    if owner is None:
        owner = await load_owner(state.redis, state.keys, job_id)
    _check_access(request, job_id, owner is not None, owner)
    return owner


async def _record(request: Request, job_id: str) -> JobRecord:
    await _check_readable(request, job_id)
    state = request.app.state
    record = await load_job(state.redis, state.keys, job_id)
    if record is None:  # expired in between
        raise JobNotFound(job_id)
    return record


def _check_max_tokens(body: JobRequest, settings, param: str) -> None:
    max_tokens = body.params.max_tokens
    if max_tokens is not None and max_tokens > settings.max_tokens_limit:
        raise InvalidRequest(f"{param} must be between 1 and {settings.max_tokens_limit}", param=param)


def _check_limits(body: JobRequest, request: Request, max_tokens_param: str) -> list[dict[str, str]]:
    settings = request.app.state.settings
    check_model(body.model, settings)
    messages = body.chat_messages()
    if len(messages) > settings.max_messages:
        raise InvalidRequest(f"at most {settings.max_messages} messages per job", param="messages")
    for position, message in enumerate(messages):
        if len(message["content"]) > settings.max_message_chars:
            raise InvalidRequest(
                f"message {position} is longer than {settings.max_message_chars} characters", param="messages"
            )
    _check_max_tokens(body, settings, max_tokens_param)
    return messages


SSE_RESPONSE = {"content": {"text/event-stream": {}}, "description": "Server-Sent Events: metadata, token, "
                "reset, error, end (graph jobs add custom, update, value, tool_call, tool_result). Each has an id; "
                "resume with Last-Event-ID, under any filter."}


async def start_job(body: JobRequest, request: Request, max_tokens_param: str = "params.max_tokens",
                    idempotency_key: str | None = None, extra: dict | None = None) -> tuple[JobRecord, bool]:
    """Check limits and quotas, store the record and enqueue the job: the one path every API that runs a
    job takes. `max_tokens_param` is the field's name in the caller's API, for the error's `param`; `extra`
    is stored in the job's request beside what the worker reads (an API's own fields).
    Returns the record and whether it is the job an earlier request with the same Idempotency-Key made."""
    state = request.app.state
    principal = principal_of(request)
    if body.graph is not None:
        _check_max_tokens(body, state.settings, max_tokens_param)
        model, request_doc = graph_request(body, state.settings)
    else:
        messages = _check_limits(body, request, max_tokens_param)
        model, request_doc = body.model, {"messages": messages, "params": body.params.model_dump(exclude_none=True),
                                          **body.tool_request(body.model, state.settings)}
    if extra:
        request_doc = {**extra, **request_doc}
    sub = Submission(principal, protocol.new_job_id(), model, request_doc, body.metadata,
                     idempotency.check(idempotency_key), rate_count=getattr(request.state, COUNT_FIELD, None))
    if sub.idempotency_key is not None:
        sub.body_digest = idempotency.digest(body.model_dump(mode="json"))
        held = await earlier_job_id(state, sub)
        if held is not None:
            return await _earlier_job(request, held), True
    state.submit_gate.enter()
    try:
        async with state.submit_gate.turn():
            record = await admit(state, sub)  # or the id of the job the Idempotency-Key already names
            if isinstance(record, str):
                return await _earlier_job(request, record), True
    finally:
        state.submit_gate.leave()
    if state.settings.log_prompts:  # a debug setting: prompts stay out of logs otherwise
        log.info("job %s request: %s", sub.job_id, protocol.dumps(request_doc))
    state.metrics.jobs_submitted.labels(model).inc()
    log.info("job %s queued (model %s)", sub.job_id, model)
    return record, False


async def _earlier_job(request: Request, job_id: str) -> JobRecord:
    record = await load_job(request.app.state.redis, request.app.state.keys, job_id)
    if record is None:  # the first request has not stored it yet (or was refused and is being undone)
        raise IdempotencyKeyInUse()
    return record


async def _resume_point(request: Request, job_id: str, raw_after: str | None) -> EventId | None:
    """The event a reader resumes after, checked against the job's stream; None = from the start."""
    if raw_after is None or raw_after == "":
        return None
    after = EventId.parse(raw_after)
    # Past the job's last event is an id it never had. Below it, an id missing from the stream can be one a
    # failover lost after the client received it: the client gets what came after it.
    last = await request.app.state.redis.xrevrange(request.app.state.keys.events(job_id), count=1)
    if not last or after > EventId.parse(last[0][0].decode()):
        raise InvalidEventId(raw_after, "names no event of this job")
    return after


@router.post("/v1/jobs", status_code=202, response_model=JobCreated,
             responses={200: {**SSE_RESPONSE, "description": "With `stream: true`: " + SSE_RESPONSE["description"]},
                        **_responses(400, 401, 409, 413, 422, 429, 503)},
             summary="Submit a job")
@counted_in_submit
async def submit_job(
    body: JobRequest, request: Request, response: Response,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", description="Makes the submit safe to "
                               "retry: a repeat with the same body gets the same job (kept for retention).")] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", description="With `stream: true` and a "
                             "repeated Idempotency-Key: resume the job's stream after this event.")] = None,
) -> JobCreated:
    record, repeated = await start_job(body, request, idempotency_key=idempotency_key)
    headers = {"Location": f"/v1/jobs/{record.id}", "X-Tokenrelay-Job-Id": record.id}
    if repeated:
        headers[REPLAYED_HEADER] = "true"
    if body.stream:  # one round trip: the submitter reads the stream from its first event
        after = await _resume_point(request, record.id, last_event_id) if repeated else None
        return sse_response(request, record.id, after, headers, fresh=not repeated, submitted=True,
                            owner=record.owner)
    response.headers.update(headers)
    return JobCreated(id=record.id, status=record.status, model=record.model, created_at=record.created_at,
                      stream_url=_stream_url(record.id), metadata=record.metadata, graph=record.request.get("graph"))


@router.get("/v1/jobs/{job_id}", response_model=JobView, responses=_responses(400, 401, 404, 429, 503),
            summary="A job's status and output")
async def get_job(job_id: str, request: Request) -> JobView:
    return _view(await _record(request, job_id))


@router.get(
    "/v1/jobs/{job_id}/stream",
    responses={200: SSE_RESPONSE, **_responses(400, 401, 404, 429, 503)},
    summary="Stream a job's events (SSE)",
)
async def stream_job(
    job_id: str,
    request: Request,
    last_event_id_header: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    last_event_id: Annotated[str | None, Query(max_length=64, description="Same as the Last-Event-ID header.")] = None,
    tags: Annotated[str | None, Query(max_length=1000, description="Only token events with any of these "
                                      "comma-separated tags.")] = None,
    node: Annotated[str | None, Query(max_length=1000, description="Only token, custom and update events of "
                                      "these comma-separated graph nodes.")] = None,
    events: Annotated[str | None, Query(max_length=1000, description="Only these comma-separated event "
                                        "types (reset, error and end always pass).")] = None,
    final_only: Annotated[bool, Query(description="Only the final answer's tokens (and the terminal "
                                      "events): no tool calls, tool results or other events.")] = False,
    token: Annotated[str | None, Query(max_length=1024, description="A stream token from POST "
                                       "/v1/jobs/{job_id}/stream-token, for clients that cannot send headers. "
                                       "Never an API key.")] = None,
) -> EventStreamResponse:
    reader_filter = StreamFilter.from_query(tags=tags, node=node, events=events, final_only=final_only)
    owner = await _check_readable(request, job_id)
    raw_after = last_event_id_header if last_event_id_header is not None else last_event_id
    after = await _resume_point(request, job_id, raw_after)
    return sse_response(request, job_id, after, stream_filter=reader_filter, owner=owner)


@router.post("/v1/jobs/{job_id}/cancel", status_code=202, response_model=CancelResult,
             responses={200: {"model": CancelResult, "description": "The job had already finished."},
                        **_responses(400, 401, 404, 429, 503)},
             summary="Cancel a job")
async def cancel_job(job_id: str, request: Request) -> JSONResponse:
    state = request.app.state
    await _check_readable(request, job_id)
    outcome, status = await state.scripts.cancel(job_id, state.settings.retention_s)
    if outcome == CancelOutcome.MISSING:
        raise JobNotFound(job_id)
    if outcome == CancelOutcome.FINISHED:
        result = CancelResult(id=job_id, status=status, cancelled=False, detail=f"job already {status}; nothing to do")
        return JSONResponse(result.model_dump(), status_code=200)
    if outcome == CancelOutcome.CANCELLING:
        await state.redis.publish(state.keys.cancel_channel, job_id)
        detail = "cancel requested; the worker stops before its next token"
    else:
        detail = "job cancelled before it started"
    # `status` says what the call did: "cancelling" (a worker stops it) or "cancelled" (it was queued).
    result = CancelResult(id=job_id, status=outcome, cancelled=True, detail=detail)
    return JSONResponse(result.model_dump(), status_code=202)


@router.get("/health", response_model=Health, summary="The process is up")
async def health() -> Health:
    return Health(status="ok")


@router.get("/ready", response_model=Readiness, responses={503: {"model": Readiness}},
            summary="Redis answers; how many workers are alive")
async def ready(request: Request) -> JSONResponse:
    state = request.app.state
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            await state.redis.ping()
            seconds, _ = await state.redis.time()
            alive_since_ms = (seconds - 3 * state.settings.lease_ttl_s) * 1000
            workers = await state.redis.zcount(state.keys.workers, alive_since_ms, "+inf")
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        log.warning("readiness check failed: %s", type(exc).__name__)
        return JSONResponse(Readiness(status="unavailable", redis=False, workers=0).model_dump(), status_code=503)
    return JSONResponse(Readiness(status="ok", redis=True, workers=workers).model_dump())
