"""Job records in Redis: create, read, cancel, and the attempt lifecycle (start, finish, requeue).

State changes that must not race are Lua scripts, so each is one atomic step on the server.
Script bodies are constants; user input reaches them only as validated keys and arguments.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from redis.asyncio import Redis, RedisCluster

from . import protocol
from .keys import INDEX_BUCKETS, Keys

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
    async with redis.pipeline(transaction=True) as pipe:  # the job's slot
        pipe.hset(meta_key, mapping=fields)
        pipe.expire(meta_key, ttl_s)
        await pipe.execute()
    async with redis.pipeline(transaction=False) as pipe:  # its bucket's slot; only the job list reads it
        pipe.zadd(keys.recent(job_id), {job_id: datetime.now(timezone.utc).timestamp()})
        pipe.zremrangebyrank(keys.recent(job_id), 0, -(RECENT_JOBS_KEPT // INDEX_BUCKETS) - 1)
        await pipe.execute()
    return JobRecord.from_hash({k.encode(): str(v).encode() for k, v in fields.items()})


async def load_job(redis: Redis, keys: Keys, job_id: str) -> JobRecord | None:
    raw = await redis.hgetall(keys.meta(job_id))
    return JobRecord.from_hash(raw) if raw else None


async def delete_job(redis: Redis, keys: Keys, job_id: str) -> None:
    await redis.delete(keys.meta(job_id), keys.events(job_id))


# KEYS: meta, events. ARGV: end event data, finished_at, retention_s, live channel.
# Returns 'missing', 'finished:<status>' (nothing to do), 'cancelled' (a queued job, ended
# here) or 'cancelling' (a worker will stop it).
CANCEL_SCRIPT = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if status == 'succeeded' or status == 'failed' or status == 'cancelled' then return 'finished:' .. status end
redis.call('HSET', KEYS[1], 'cancel_requested', '1')
if status == 'queued' then
  local attempt = tonumber(redis.call('HGET', KEYS[1], 'attempt') or '0')
  redis.call('XADD', KEYS[2], tostring(attempt + 1) .. '-0', 'e', 'end', 'd', ARGV[1])
  redis.call('HSET', KEYS[1], 'status', 'cancelled', 'finished_at', ARGV[2], 'finish_reason', 'cancelled')
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  redis.call('EXPIRE', KEYS[2], ARGV[3])
  redis.call('SPUBLISH', ARGV[4], '')
  return 'cancelled'
end
return 'cancelling'
"""

# KEYS: meta, lease. ARGV: lease_ms, started_at, ttl_s.
# Returns {'started', attempt} or {reason}: 'missing', 'finished', 'busy' (a live lease),
# 'cancel' (cancel requested before a worker took it).
START_SCRIPT = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing'} end
if status == 'succeeded' or status == 'failed' or status == 'cancelled' then return {'finished'} end
if redis.call('EXISTS', KEYS[2]) == 1 then return {'busy'} end
local attempt = redis.call('HINCRBY', KEYS[1], 'attempt', 1)
redis.call('SET', KEYS[2], attempt, 'PX', ARGV[1])
redis.call('HSET', KEYS[1], 'status', 'running', 'started_at', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
if redis.call('HGET', KEYS[1], 'cancel_requested') == '1' then return {'cancel', attempt} end
return {'started', attempt}
"""

# KEYS: meta, events, lease. ARGV: attempt, end entry id, end data, retention_s, error entry id
# and data ('' when none), live channel, then field/value pairs for the record. Returns 1 when
# written, 2 if already finished, 0 if another attempt owns the job (this one was superseded).
# allow-oom: a job's last few bytes always land, even at maxmemory with noeviction, so its
# readers get their `end` instead of waiting for one that Redis refuses.
FINISH_SCRIPT = """#!lua flags=allow-oom
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 0 end
if redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[1] then return 0 end
if status == 'succeeded' or status == 'failed' or status == 'cancelled' then return 2 end
if ARGV[5] ~= '' then redis.call('XADD', KEYS[2], ARGV[5], 'e', 'error', 'd', ARGV[6]) end
redis.call('XADD', KEYS[2], ARGV[2], 'e', 'end', 'd', ARGV[3])
redis.call('HSET', KEYS[1], unpack(ARGV, 8))
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('DEL', KEYS[3])
redis.call('SPUBLISH', ARGV[7], '')
return 1
"""

# KEYS: meta, lease. Claims a job whose lease ran out: exactly one caller gets 'claimed' and must
# enqueue it again. 'alive': a lease is held; 'idle': the job is not running (nothing to do).
CLAIM_LOST_SCRIPT = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 'alive' end
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 'idle' end
redis.call('HSET', KEYS[1], 'status', 'queued')
return 'claimed'
"""

# KEYS: meta, lease. ARGV: attempt, lease_ms. Renews this attempt's lease; takes it again if it ran
# out while nobody claimed the job (a slow heartbeat). 1 if held, 0 if another attempt owns the job.
RENEW_SCRIPT = """
local held = redis.call('GET', KEYS[2])
if held == ARGV[1] then redis.call('PEXPIRE', KEYS[2], ARGV[2]) return 1 end
if held then return 0 end
if redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[1] or redis.call('HGET', KEYS[1], 'status') ~= 'running' then
  return 0
end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return 1
"""

# KEYS: a running-jobs bucket. ARGV: job id, score. Drops the entry unless someone wrote it since.
UNTRACK_SCRIPT = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) == tonumber(ARGV[2]) then redis.call('ZREM', KEYS[1], ARGV[1]) return 1 end
return 0
"""


class JobScripts:
    """The store's Lua scripts, registered once per Redis client. Each touches one slot."""

    def __init__(self, redis: Redis | RedisCluster, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._cancel = redis.register_script(CANCEL_SCRIPT)
        self._start = redis.register_script(START_SCRIPT)
        self._finish = redis.register_script(FINISH_SCRIPT)
        self._claim = redis.register_script(CLAIM_LOST_SCRIPT)
        self._untrack = redis.register_script(UNTRACK_SCRIPT)

    async def cancel(self, job_id: str, retention_s: int) -> str:
        end = protocol.dumps(
            {"status": "cancelled", "usage": {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0},
             "finish_reason": "cancelled"}
        )
        keys = [self.keys.meta(job_id), self.keys.events(job_id)]
        args = [end, utc_now(), retention_s, self.keys.live(job_id)]
        return _text(await self._cancel(keys=keys, args=args))

    async def start(self, job_id: str, lease_ms: int, ttl_s: int) -> tuple[str, int]:
        result = await self._start(keys=[self.keys.meta(job_id), self.keys.lease(job_id)],
                                   args=[lease_ms, utc_now(), ttl_s])
        return _text(result[0]), int(result[1]) if len(result) > 1 else 0

    async def finish(
        self, job_id: str, attempt: int, end_id: str, end_data: str, retention_s: int, fields: dict[str, str],
        error_entry: tuple[str, str] | None = None,
    ) -> int:
        flat: list[str] = []
        for name, value in fields.items():
            flat += [name, value]
        error_id, error_data = error_entry or ("", "")
        keys = [self.keys.meta(job_id), self.keys.events(job_id), self.keys.lease(job_id)]
        args = [attempt, end_id, end_data, retention_s, error_id, error_data, self.keys.live(job_id), *flat]
        return int(await self._finish(keys=keys, args=args))

    async def claim_lost(self, job_id: str) -> str:
        return _text(await self._claim(keys=[self.keys.meta(job_id), self.keys.lease(job_id)]))

    async def renew(self, leases: dict[str, int], lease_ms: int) -> dict[str, bool]:
        """Renew the leases of running attempts (job id -> attempt), one pipelined round for all."""
        # EVAL, not EVALSHA: a cluster pipeline cannot load a script a node has not seen (a new primary).
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id, attempt in leases.items():
                pipe.eval(RENEW_SCRIPT, 2, self.keys.meta(job_id), self.keys.lease(job_id), attempt, lease_ms)
            held = await pipe.execute(raise_on_error=False)
        return {job_id: result == 1 for job_id, result in zip(leases, held)}

    async def track(self, job_ids: list[str], check_at_ms: int) -> None:
        """Put jobs in the running index (when to look at their lease next); before they start."""
        by_bucket: dict[str, dict[str, int]] = {}
        for job_id in job_ids:
            by_bucket.setdefault(self.keys.running(job_id), {})[job_id] = check_at_ms
        async with self.redis.pipeline(transaction=False) as pipe:
            for bucket, members in by_bucket.items():
                pipe.zadd(bucket, members)
            await pipe.execute()

    async def untrack(self, job_id: str, score: float | None = None) -> None:
        """Drop a job from the running index; with `score`, only if nobody re-tracked it since."""
        if score is None:
            await self.redis.zrem(self.keys.running(job_id), job_id)
        else:
            await self._untrack(keys=[self.keys.running(job_id)], args=[job_id, score])
