"""`GET /v1/jobs`: the most recent jobs, newest first. A key lists its own jobs from its own index,
so `limit` counts its jobs only; an admin key lists every job from the buckets of the `recent` index."""

from __future__ import annotations

import heapq
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from tokenrelay.core.store import JobRecord

from .auth import principal_of
from .errors import ERROR_RESPONSES

router = APIRouter()

MAX_LIMIT = 200


class JobSummary(BaseModel):
    id: str
    status: str
    model: str
    created_at: str
    finished_at: str | None
    output_tokens: int | None
    stream_url: str


class JobList(BaseModel):
    object: str = "list"
    data: list[JobSummary]


SUMMARY_FIELDS = ["id", "status", "model", "created_at", "finished_at", "usage", "owner"]
SUMMARY_KEYS = [name.encode() for name in SUMMARY_FIELDS]


def _summary(record: JobRecord) -> JobSummary:
    return JobSummary(id=record.id, status=record.status, model=record.model, created_at=record.created_at,
                      finished_at=record.finished_at,
                      output_tokens=(record.usage or {}).get("output_tokens"),
                      stream_url=f"/v1/jobs/{record.id}/stream")


async def _live_rows(redis, keys, index: str, limit: int) -> list[list]:
    """Up to `limit` rows of jobs that still exist, newest first; ids of expired jobs are dropped
    from the index on the way (they stay there until trimmed otherwise)."""
    rows: list[list] = []
    start = 0
    while len(rows) < limit:
        job_ids = [raw.decode() for raw in await redis.zrevrange(index, start, start + limit - 1)]
        if not job_ids:
            break
        async with redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:  # the summary's fields only: a record also holds the whole request
                pipe.hmget(keys.meta(job_id), SUMMARY_FIELDS)
            batch = await pipe.execute()
        expired = [job_id for job_id, row in zip(job_ids, batch) if row[0] is None]
        if expired:
            await redis.zrem(index, *expired)
        rows += [row for row in batch if row[0] is not None]
        start += len(job_ids) - len(expired)
    return rows[:limit]


async def _newest_of_all(redis, keys, limit: int) -> list[list]:
    """Every owner's newest jobs: the newest `limit` of each bucket of the `recent` index, merged (the
    buckets are keys of their own, spread over a cluster). Expired ids are dropped on the way, so a page
    may come out shorter once, never with a dead job."""
    async with redis.pipeline(transaction=False) as pipe:
        for bucket in keys.recent_buckets:
            pipe.zrevrange(bucket, 0, limit - 1, withscores=True)
        buckets = await pipe.execute()
    newest = heapq.nlargest(limit, ((score, raw.decode()) for entries in buckets for raw, score in entries))
    job_ids = [job_id for _, job_id in newest]
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.hmget(keys.meta(job_id), SUMMARY_FIELDS)
        rows = await pipe.execute() if job_ids else []
    for job_id, row in zip(job_ids, rows):
        if row[0] is None:
            await redis.zrem(keys.recent(job_id), job_id)
    return [row for row in rows if row[0] is not None]


@router.get("/v1/jobs", response_model=JobList, responses={400: ERROR_RESPONSES[400], 503: ERROR_RESPONSES[503]},
            summary="Recent jobs, newest first")
async def list_jobs(request: Request, limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 20) -> JobList:
    state = request.app.state
    principal = principal_of(request)
    if principal.admin:
        rows = await _newest_of_all(state.redis, state.keys, limit)
    else:
        rows = await _live_rows(state.redis, state.keys, state.keys.owner_jobs(principal.name), limit)
    records = [JobRecord.from_hash({k: v for k, v in zip(SUMMARY_KEYS, row) if v is not None}) for row in rows]
    return JobList(data=[_summary(record) for record in records if principal.may_access(record.owner)])
