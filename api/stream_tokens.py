"""`POST /v1/jobs/{id}/stream-token`: a short-lived token for browsers, whose EventSource cannot send headers."""

from __future__ import annotations

from datetime import datetime, timezone

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from .auth import principal_of
from .errors import ERROR_RESPONSES
from .routes import _record, _stream_url

router = APIRouter()


class StreamToken(BaseModel):
    token: str = Field(description="Good for GET /v1/jobs/{job_id}/stream?token=... of this job only.")
    expires_at: str
    stream_url: str


@router.post("/v1/jobs/{job_id}/stream-token", response_model=StreamToken,
             responses={code: ERROR_RESPONSES[code] for code in (400, 401, 404, 429, 503)},
             summary="A short-lived token to read one job's stream without headers")
async def stream_token(job_id: str, request: Request) -> StreamToken:
    record = await _record(request, job_id)
    token, expires = request.app.state.stream_tokens.issue(record.id, principal_of(request).name)
    expires_at = datetime.fromtimestamp(expires, timezone.utc).isoformat().replace("+00:00", "Z")
    return StreamToken(token=token, expires_at=expires_at, stream_url=f"{_stream_url(record.id)}?token={token}")
