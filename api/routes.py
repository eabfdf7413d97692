"""The HTTP routes: thin views over the job store, the broker and the relay."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from redis.exceptions import RedisError

from tokenrelay.core import protocol
from tokenrelay.core.protocol import EventId
from tokenrelay.core.registry import check_model
from tokenrelay.core.status import CancelOutcome, JobStatus
from tokenrelay.core.store import JobRecord, load_job
from tokenrelay.errors import (
    InvalidEventId,
    InvalidRequest,
    JobNotFound,
    ServiceUnavailable,
)

from .admission import admit, forget_later
from .auth import principal_of
from .errors import ERROR_RESPONSES
from .filters import StreamFilter
from .graph_jobs import graph_request
from .quotas import limit_duration
from .schemas import CancelResult, Health, JobCreated, JobRequest, JobView, Readiness

log = logging.getLogger("tokenrelay.gateway")

router = APIRouter()

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
SSE_RETRY_FRAME = b"retry: 1000\n\n"
# While Redis or the broker is unreachable, answer 503 within this long instead of hanging.
READY_TIMEOUT_S = 2.0
SUBMIT_TIMEOUT_S = 5.0


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


async def _record(request: Request, job_id: str) -> JobRecord:
    state = request.app.state
    record = await load_job(state.redis, state.keys, protocol.check_job_id(job_id))
    _check_access(request, job_id, record is not None, record.owner if record else None)
    return record


async def _check_readable(request: Request, job_id: str) -> None:
    """The job exists and the caller may read it, without fetching the record (it holds the whole
    request, which a reader has no use for)."""
    state = request.app.state
    found, owner = await state.redis.hmget(state.keys.meta(protocol.check_job_id(job_id)), ["id", "owner"])
    _check_access(request, job_id, found is not None, owner.decode() if owner is not None else None)


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


def _sse_response(request: Request, job_id: str, after: EventId | None, headers: dict[str, str] | None = None,
                  *, fresh: bool = False, stream_filter: StreamFilter | None = None):
    state = request.app.state

    async def frames():
        yield SSE_RETRY_FRAME
        try:
            async for chunk in state.relay.follow(job_id, after, stream_filter, fresh=fresh):
                yield chunk
        except RedisError as exc:
            # End the response cleanly, without `end`: the client resumes from its last event id.
            log.warning("stream of job %s cut short: %s", job_id, type(exc).__name__)

    body = state.reader_slots.hold(job_id, limit_duration(frames(), state.settings.max_stream_s))
    return StreamingResponse(body, media_type="text/event-stream", headers={**SSE_HEADERS, **(headers or {})})


async def start_job(body: JobRequest, request: Request, max_tokens_param: str = "params.max_tokens") -> JobRecord:
    """Check limits and quotas, store the record and enqueue the job: the one path every API that runs a
    job takes. `max_tokens_param` is the field's name in the caller's API, for the error's `param`."""
    state = request.app.state
    principal = principal_of(request)
    if body.graph is not None:
        _check_max_tokens(body, state.settings, max_tokens_param)
        model, request_doc = graph_request(body, state.settings)
    else:
        messages = _check_limits(body, request, max_tokens_param)
        model, request_doc = body.model, {"messages": messages, "params": body.params.model_dump(exclude_none=True)}
    job_id = protocol.new_job_id()
    try:
        async with asyncio.timeout(SUBMIT_TIMEOUT_S):
            record = await admit(state, principal, job_id, model, request_doc, body.metadata)
    except TimeoutError:
        log.warning("submit of job %s timed out; Redis or the broker is not answering", job_id)
        forget_later(state, principal, job_id)
        raise ServiceUnavailable("the job queue is not answering; retry shortly") from None
    if state.settings.log_prompts:  # a debug setting: prompts stay out of logs otherwise
        log.info("job %s request: %s", job_id, protocol.dumps(request_doc))
    state.metrics.jobs_submitted.labels(model).inc()
    log.info("job %s queued (model %s)", job_id, model)
    return record


@router.post("/v1/jobs", status_code=202, response_model=JobCreated,
             responses={200: {**SSE_RESPONSE, "description": "With `stream: true`: " + SSE_RESPONSE["description"]},
                        **_responses(400, 401, 413, 429, 503)},
             summary="Submit a job")
async def submit_job(body: JobRequest, request: Request, response: Response) -> JobCreated:
    record = await start_job(body, request)
    if body.stream:  # one round trip: the submitter reads the stream from its first event
        return _sse_response(request, record.id, None,
                             {"Location": f"/v1/jobs/{record.id}", "X-Tokenrelay-Job-Id": record.id}, fresh=True)
    response.headers["Location"] = f"/v1/jobs/{record.id}"
    return JobCreated(id=record.id, status=JobStatus.QUEUED, model=record.model, created_at=record.created_at,
                      stream_url=_stream_url(record.id), metadata=body.metadata, graph=body.graph)


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
) -> StreamingResponse:
    state = request.app.state
    reader_filter = StreamFilter.from_query(tags=tags, node=node, events=events, final_only=final_only)
    await _check_readable(request, job_id)
    raw_after = last_event_id_header if last_event_id_header is not None else last_event_id
    after = None
    if raw_after is not None and raw_after != "":
        after = EventId.parse(raw_after)
        # Past the job's last event is an id it never had. Below it, an id missing from the stream can be
        # one a failover lost after the client received it: the client gets what came after it.
        last = await state.redis.xrevrange(state.keys.events(job_id), count=1)
        if not last or after > EventId.parse(last[0][0].decode()):
            raise InvalidEventId(raw_after, "names no event of this job")
    return _sse_response(request, job_id, after, stream_filter=reader_filter)


@router.post("/v1/jobs/{job_id}/cancel", status_code=202, response_model=CancelResult,
             responses={200: {"model": CancelResult, "description": "The job had already finished."},
                        **_responses(400, 401, 404, 429, 503)},
             summary="Cancel a job")
async def cancel_job(job_id: str, request: Request) -> JSONResponse:
    state = request.app.state
    await _record(request, job_id)
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
