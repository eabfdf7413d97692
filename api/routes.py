"""The HTTP routes: thin views over the job store, the broker and the relay."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from tokenrelay import protocol
from tokenrelay.errors import InvalidEventId, InvalidRequest, JobNotFound, ServiceUnavailable
from tokenrelay.models import check_model
from tokenrelay.protocol import EventId
from tokenrelay.store import JobRecord, load_job

from .auth import principal_of
from .errors import ERROR_RESPONSES
from .admission import admit, forget_later
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
        output={"text": record.output_text if record.finished else None},
        usage=record.usage,
        error=record.error,
        finish_reason=record.finish_reason or None,
        metadata=record.metadata,
    )


async def _record(request: Request, job_id: str) -> JobRecord:
    state = request.app.state
    principal = principal_of(request)
    record = await load_job(state.redis, state.keys, protocol.check_job_id(job_id))
    # Another key's job is a 404, like an unknown one: job ids must not be probeable.
    if record is None or not principal.may_access(record.owner):
        raise JobNotFound(job_id)
    if principal.job_id is not None and principal.job_id != job_id:
        raise JobNotFound(job_id)
    return record


def _check_limits(body: JobRequest, request: Request) -> list[dict[str, str]]:
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
    max_tokens = body.params.max_tokens
    if max_tokens is not None and max_tokens > settings.max_tokens_limit:
        raise InvalidRequest(f"max_tokens must be between 1 and {settings.max_tokens_limit}", param="params.max_tokens")
    return messages


@router.post("/v1/jobs", status_code=202, response_model=JobCreated,
             responses=_responses(400, 401, 413, 429, 503), summary="Submit a job")
async def submit_job(body: JobRequest, request: Request, response: Response) -> JobCreated:
    state = request.app.state
    principal = principal_of(request)
    messages = _check_limits(body, request)
    job_id = protocol.new_job_id()
    try:
        async with asyncio.timeout(SUBMIT_TIMEOUT_S):
            record = await admit(state, principal, body, messages, job_id)
    except TimeoutError:
        log.warning("submit of job %s timed out; Redis or the broker is not answering", job_id)
        forget_later(state, principal, job_id)
        raise ServiceUnavailable("the job queue is not answering; retry shortly") from None
    response.headers["Location"] = f"/v1/jobs/{job_id}"
    return JobCreated(id=job_id, status="queued", model=body.model, created_at=record.created_at,
                      stream_url=_stream_url(job_id), metadata=body.metadata)


@router.get("/v1/jobs/{job_id}", response_model=JobView, responses=_responses(400, 401, 404, 429, 503),
            summary="A job's status and output")
async def get_job(job_id: str, request: Request) -> JobView:
    return _view(await _record(request, job_id))


@router.get(
    "/v1/jobs/{job_id}/stream",
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events: metadata, token, reset, "
              "error, end. Each has an id; resume with Last-Event-ID."},
        **_responses(400, 401, 404, 429, 503),
    },
    summary="Stream a job's events (SSE)",
)
async def stream_job(
    job_id: str,
    request: Request,
    last_event_id_header: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    last_event_id: Annotated[str | None, Query(max_length=64, description="Same as the Last-Event-ID header.")] = None,
    token: Annotated[str | None, Query(max_length=1024, description="A stream token from POST "
                                       "/v1/jobs/{job_id}/stream-token, for clients that cannot send headers. "
                                       "Never an API key.")] = None,
) -> StreamingResponse:
    state = request.app.state
    await _record(request, job_id)
    raw_after = last_event_id_header if last_event_id_header is not None else last_event_id
    after = None
    if raw_after is not None and raw_after != "":
        after = EventId.parse(raw_after)
        key = state.keys.events(job_id)
        if not await state.redis.xrange(key, str(after), str(after), count=1):
            raise InvalidEventId(raw_after, "names no event of this job")

    async def frames():
        yield SSE_RETRY_FRAME
        async for chunk in state.relay.follow(job_id, after):
            yield chunk

    body = state.reader_slots.hold(job_id, limit_duration(frames(), state.settings.max_stream_s))
    return StreamingResponse(body, media_type="text/event-stream", headers=SSE_HEADERS)


@router.post("/v1/jobs/{job_id}/cancel", status_code=202, response_model=CancelResult,
             responses={200: {"model": CancelResult, "description": "The job had already finished."},
                        **_responses(400, 401, 404, 429, 503)},
             summary="Cancel a job")
async def cancel_job(job_id: str, request: Request) -> JSONResponse:
    state = request.app.state
    await _record(request, job_id)
    outcome = await state.scripts.cancel(job_id, state.settings.retention_s)
    if outcome == "missing":
        raise JobNotFound(job_id)
    if outcome.startswith("finished:"):
        status = outcome.removeprefix("finished:")
        result = CancelResult(id=job_id, status=status, cancelled=False, detail=f"job already {status}; nothing to do")
        return JSONResponse(result.model_dump(), status_code=200)
    if outcome == "cancelling":
        await state.redis.publish(state.keys.cancel_channel, job_id)
        detail = "cancel requested; the worker stops before its next token"
    else:
        detail = "job cancelled before it started"
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
