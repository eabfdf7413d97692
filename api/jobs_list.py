"""`GET /v1/jobs`: the most recent jobs, newest first, from the store's `recent` index."""

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


@router.get("/v1/jobs", response_model=JobList, responses={400: ERROR_RESPONSES[400], 503: ERROR_RESPONSES[503]},
            summary="Recent jobs, newest first")
async def list_jobs(request: Request, limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 20) -> JobList:
    state = request.app.state
    async with state.redis.pipeline(transaction=False) as pipe:  # every bucket's newest, then merge
        for bucket in state.keys.recent_buckets:
            pipe.zrevrange(bucket, 0, limit - 1, withscores=True)
        buckets = await pipe.execute()
    newest = heapq.nlargest(limit, (entry for entries in buckets for entry in entries), key=lambda e: e[1])
    job_ids = [raw.decode() for raw, _ in newest]
    async with state.redis.pipeline(transaction=False) as pipe:
        for job_id in job_ids:  # the summary's fields only: a record also holds the whole request
            pipe.hmget(state.keys.meta(job_id), SUMMARY_FIELDS)
        rows = await pipe.execute() if job_ids else []
    principal = principal_of(request)
    records = [JobRecord.from_hash({k: v for k, v in zip(SUMMARY_KEYS, row) if v is not None})
               for row in rows if row[0] is not None]
    # Expired jobs leave their id in the index until it is trimmed; other keys' jobs are not listed.
    return JobList(data=[_summary(record) for record in records if principal.may_access(record.owner)])
