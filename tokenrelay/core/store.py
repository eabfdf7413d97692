"""Job records in Redis: create, read, cancel, and the attempt lifecycle (start, finish, requeue).

State changes that must not race are Lua scripts, so each is one atomic step on the server.
Script bodies are constants; user input reaches them only as validated keys and arguments.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from redis.asyncio import Redis

from . import protocol
from .keys import Keys

RECENT_JOBS_KEPT = 10_000


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _text(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else value


@dataclass
class JobRecord:
    id: str
    status: str
    model: str
    created_at: str
    started_at: str | None
    finished_at: str | None
    attempt: int
    output_text: str | None
    output_state: Any
    usage: dict[str, Any] | None
    error: dict[str, Any] | None
    finish_reason: str | None
    metadata: dict[str, Any]
    request: dict[str, Any]
    cancel_requested: bool
    owner: str | None = None  # the name of the API key that created it

    @classmethod
    def from_hash(cls, raw: dict[bytes, bytes]) -> "JobRecord":
        fields = {_text(key): _text(value) for key, value in raw.items()}

        def loads(name: str, default: Any) -> Any:
            value = fields.get(name)
            return json.loads(value) if value else default

        return cls(
            id=fields["id"],
            status=fields.get("status", "queued"),
            model=fields.get("model", ""),
            created_at=fields.get("created_at", ""),
            started_at=fields.get("started_at"),
            finished_at=fields.get("finished_at"),
            attempt=int(fields.get("attempt") or 0),
            output_text=fields.get("output_text"),
            output_state=loads("output_state", None),
            usage=loads("usage", None),
            error=loads("error", None),
            finish_reason=fields.get("finish_reason"),
            metadata=loads("metadata", {}),
            request=loads("request", {}),
            cancel_requested=fields.get("cancel_requested") == "1",
            owner=fields.get("owner"),
        )

    @property
    def finished(self) -> bool:
        return self.status in protocol.TERMINAL_STATUSES


async def create_job(
    redis: Redis, keys: Keys, *, job_id: str, model: str, request: dict, metadata: dict, ttl_s: int,
    owner: str = "",
) -> JobRecord:
    created_at = utc_now()
    meta_key = keys.meta(job_id)
    fields = {
        "id": job_id,
        "status": "queued",
        "model": model,
        "created_at": created_at,
        "attempt": 0,
        "request": protocol.dumps(request),
        "metadata": protocol.dumps(metadata),
        "owner": owner,
    }
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(meta_key, mapping=fields)
        pipe.expire(meta_key, ttl_s)
        pipe.zadd(keys.recent, {job_id: datetime.now(timezone.utc).timestamp()})
        pipe.zremrangebyrank(keys.recent, 0, -RECENT_JOBS_KEPT - 1)
        await pipe.execute()
    return JobRecord.from_hash({k.encode(): str(v).encode() for k, v in fields.items()})


async def load_job(redis: Redis, keys: Keys, job_id: str) -> JobRecord | None:
    raw = await redis.hgetall(keys.meta(job_id))
    return JobRecord.from_hash(raw) if raw else None


async def delete_job(redis: Redis, keys: Keys, job_id: str) -> None:
    await redis.delete(keys.meta(job_id), keys.events(job_id))


# KEYS: meta, events, running. ARGV: job id, end event data, finished_at, retention_s, live channel.
# Returns 'missing', 'finished:<status>' (nothing to do), 'cancelled' (a queued job, ended
# here) or 'cancelling' (a worker will stop it).
CANCEL_SCRIPT = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if status == 'succeeded' or status == 'failed' or status == 'cancelled' then return 'finished:' .. status end
redis.call('HSET', KEYS[1], 'cancel_requested', '1')
if status == 'queued' then
  local attempt = tonumber(redis.call('HGET', KEYS[1], 'attempt') or '0')
  redis.call('XADD', KEYS[2], tostring(attempt + 1) .. '-0', 'e', 'end', 'd', ARGV[2])
  redis.call('HSET', KEYS[1], 'status', 'cancelled', 'finished_at', ARGV[3], 'finish_reason', 'cancelled')
  redis.call('EXPIRE', KEYS[1], ARGV[4])
  redis.call('EXPIRE', KEYS[2], ARGV[4])
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('SPUBLISH', ARGV[5], '')
  return 'cancelled'
end
return 'cancelling'
"""

# KEYS: meta, running. ARGV: job id, lease_ms, started_at, ttl_s.
# Returns {'started', attempt} or {reason}: 'missing', 'finished', 'busy' (a live lease),
# 'cancel' (cancel requested before a worker took it).
START_SCRIPT = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing'} end
if status == 'succeeded' or status == 'failed' or status == 'cancelled' then return {'finished'} end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = redis.call('ZSCORE', KEYS[2], ARGV[1])
if lease and tonumber(lease) > now_ms then return {'busy'} end
local attempt = redis.call('HINCRBY', KEYS[1], 'attempt', 1)
redis.call('ZADD', KEYS[2], now_ms + tonumber(ARGV[2]), ARGV[1])
redis.call('HSET', KEYS[1], 'status', 'running', 'started_at', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
if redis.call('HGET', KEYS[1], 'cancel_requested') == '1' then return {'cancel', attempt} end
return {'started', attempt}
"""

# KEYS: meta, events, running. ARGV: job id, attempt, end entry id, end data, retention_s,
# error entry id and data ('' when none), live channel, then field/value pairs for the record. Returns 1 when
# written, 2 if already finished, 0 if another attempt owns the job (this one was superseded).
# allow-oom: a job's last few bytes always land, even at maxmemory with noeviction, so its
# readers get their `end` instead of waiting for one that Redis refuses.
FINISH_SCRIPT = """#!lua flags=allow-oom
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 0 end
if redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[2] then return 0 end
if status == 'succeeded' or status == 'failed' or status == 'cancelled' then return 2 end
if ARGV[6] ~= '' then redis.call('XADD', KEYS[2], ARGV[6], 'e', 'error', 'd', ARGV[7]) end
redis.call('XADD', KEYS[2], ARGV[3], 'e', 'end', 'd', ARGV[4])
redis.call('HSET', KEYS[1], unpack(ARGV, 9))
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[5])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('SPUBLISH', ARGV[8], '')
return 1
"""

# KEYS: running, meta. ARGV: job id, now_ms. Claims a job whose lease ran out: exactly one
# caller gets 1 and must enqueue it again.
CLAIM_LOST_SCRIPT = """
local lease = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not lease or tonumber(lease) > tonumber(ARGV[2]) then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
local status = redis.call('HGET', KEYS[2], 'status')
if status ~= 'running' then return 0 end
redis.call('HSET', KEYS[2], 'status', 'queued')
return 1
"""


class JobScripts:
    """The store's Lua scripts, registered once per Redis client."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._cancel = redis.register_script(CANCEL_SCRIPT)
        self._start = redis.register_script(START_SCRIPT)
        self._finish = redis.register_script(FINISH_SCRIPT)
        self._claim = redis.register_script(CLAIM_LOST_SCRIPT)

    async def cancel(self, job_id: str, retention_s: int) -> str:
        end = protocol.dumps(
            {"status": "cancelled", "usage": {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0},
             "finish_reason": "cancelled"}
        )
        keys = [self.keys.meta(job_id), self.keys.events(job_id), self.keys.running]
        args = [job_id, end, utc_now(), retention_s, self.keys.live(job_id)]
        return _text(await self._cancel(keys=keys, args=args))

    async def start(self, job_id: str, lease_ms: int, ttl_s: int) -> tuple[str, int]:
        result = await self._start(
            keys=[self.keys.meta(job_id), self.keys.running], args=[job_id, lease_ms, utc_now(), ttl_s]
        )
        return _text(result[0]), int(result[1]) if len(result) > 1 else 0

    async def finish(
        self, job_id: str, attempt: int, end_id: str, end_data: str, retention_s: int, fields: dict[str, str],
        error_entry: tuple[str, str] | None = None,
    ) -> int:
        flat: list[str] = []
        for name, value in fields.items():
            flat += [name, value]
        error_id, error_data = error_entry or ("", "")
        keys = [self.keys.meta(job_id), self.keys.events(job_id), self.keys.running]
        args = [job_id, attempt, end_id, end_data, retention_s, error_id, error_data, self.keys.live(job_id), *flat]
        return int(await self._finish(keys=keys, args=args))

    async def claim_lost(self, job_id: str, now_ms: int) -> bool:
        return bool(await self._claim(keys=[self.keys.running, self.keys.meta(job_id)], args=[job_id, now_ms]))
