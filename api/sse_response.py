"""A job's events as an SSE response, resilient to Redis errors while it is read.

Deliberate choices (read before changing):
- A Redis error while a stream is read (a busy pool, a restart) is retried from the last event sent,
  for up to STREAM_RETRY_S: the client sees a pause, not a cut.
- The response is `EventStreamResponse` (api/event_stream.py): one task per stream, handed off to the
  outermost middleware; the reader's slot, the time limit and the retry frame live there.
- Live frames may bypass the response's loop (api/direct_write.py): `cursor` follows them too, and
  a retry's clock restarts once the stream moved on since the last failure, not only when a frame
  passed through here.
- Past that, a reader of `GET .../stream` gets the end of the response without `end`, and resumes
  with its Last-Event-ID. A submit's own stream (`"stream": true`) ends with `error` + `end` (status
  `interrupted`, no id) instead: an accepted streaming submit never ends with nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial

from fastapi import Request
from redis.exceptions import RedisError

from tokenrelay.core import protocol
from tokenrelay.core.protocol import EventId

from .direct_write import Outlet
from .event_stream import EventStreamResponse
from .filters import StreamFilter
from .hubs import Cursor
from .quotas import STREAM_LIMIT_FRAME

log = logging.getLogger("tokenrelay.gateway")

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
SSE_RETRY_FRAME = b"retry: 1000\n\n"
STREAM_RETRY_S = 30.0
STREAM_RETRY_DELAY_S = 0.5


def _interrupted_frames(job_id: str) -> bytes:
    error = {"type": "stream_unavailable", "message": f"the job store stopped answering; the job goes on: resume at "
             f"/v1/jobs/{job_id}/stream with Last-Event-ID"}
    end = {"status": "interrupted", "usage": None, "finish_reason": None}
    return (b"event: error\ndata: " + protocol.dumps(error).encode() + b"\n\n"
            b"event: end\ndata: " + protocol.dumps(end).encode() + b"\n\n")


def sse_response(request: Request, job_id: str, after: EventId | None, headers: dict[str, str] | None = None,
                 *, fresh: bool = False, stream_filter: StreamFilter | None = None, submitted: bool = False,
                 owner: str | None = None) -> EventStreamResponse:
    """The job's events after `after`. A Redis error (a busy pool, a restart) is retried from the last
    event sent for up to STREAM_RETRY_S; past that the response ends without `end` and the client
    resumes, except on a submit's own stream (`submitted`), which ends with `error` + `end` (status
    `interrupted`, no id): an accepted `"stream": true` request never ends with nothing. `owner`: the
    job's owner as the caller's admission read it (the relay keeps it, so later readers need not)."""
    state = request.app.state

    outlet = Outlet()

    async def frames():
        cursor, from_start, give_up_at, failed_at = Cursor(after), fresh, None, None
        while True:
            try:
                async for chunk in state.relay.follow(job_id, cursor.last, stream_filter, fresh=from_start,
                                                      owner=owner, cursor=cursor, outlet=outlet):
                    yield chunk
                return
            except RedisError as exc:
                now = time.monotonic()
                if give_up_at is None or cursor.last != failed_at:  # the first failure since the stream moved
                    give_up_at, failed_at = now + STREAM_RETRY_S, cursor.last
                if now >= give_up_at:
                    log.warning("stream of job %s cut short: %s", job_id, type(exc).__name__)
                    if submitted:
                        yield _interrupted_frames(job_id)
                    return
                from_start = False
                await asyncio.sleep(STREAM_RETRY_DELAY_S)

    return event_stream(request, job_id, frames(), {**SSE_HEADERS, **(headers or {})}, prelude=SSE_RETRY_FRAME,
                        outlet=outlet)


def event_stream(request: Request, job_id: str, frames, headers: dict[str, str], *,
                 prelude: bytes = b"", outlet: Outlet | None = None) -> EventStreamResponse:
    """Any API's stream of a job's frames: the reader's slot for the life of the response, the
    max_stream_s limit, one task per stream (api/event_stream.py). `outlet`: see api/direct_write.py."""
    state = request.app.state
    state.reader_slots.take(job_id)
    return EventStreamResponse(frames, headers=headers, prelude=prelude, max_s=state.settings.max_stream_s,
                               limit_frame=STREAM_LIMIT_FRAME, on_close=partial(state.reader_slots.release, job_id),
                               outlet=outlet)
