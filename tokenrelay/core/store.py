"""Job records in Redis: create, read, cancel, and the attempt lifecycle (start, finish, requeue).

State changes that must not race are Lua scripts, so each is one atomic step on the server.
Script bodies are files in lua/; user input reaches them only as validated keys and arguments.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import WatchError

from .. import events
from . import protocol
from .keys import INDEX_BUCKETS, Keys
from .lua import load_script
from .status import ClaimOutcome, CancelOutcome, Cancelled, FinishOutcome, JobStatus, Started, StartOutcome

RECENT_JOBS_KEPT = 10_000
RECENT_JOBS_PER_BUCKET = RECENT_JOBS_KEPT // INDEX_BUCKETS


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _text(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else value


@dataclass
class JobRecord:
    id: str
    status: JobStatus
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
    output_tool_calls: list[dict[str, Any]] | None = None  # a model job's tool calls, once it finished

    @classmethod
    def from_hash(cls, raw: dict[bytes, bytes]) -> "JobRecord":
        fields = {_text(key): _text(value) for key, value in raw.items()}

        def loads(name: str, default: Any) -> Any:
            value = fields.get(name)
            return json.loads(value) if value else default

        return cls(
            id=fields["id"],
            status=JobStatus(fields.get("status", JobStatus.QUEUED)),
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
            output_tool_calls=loads("output_tool_calls", None),
        )

    @property
    def finished(self) -> bool:
        return self.status.is_terminal


def new_record(job_id: str, model: str, request: dict, metadata: dict, owner: str = "") -> dict[str, str]:
    """The fields of a new job's record (a queued job, attempt 0), as every submit path writes them."""
    return {
        "id": job_id,
        "status": JobStatus.QUEUED.value,
        "model": model,
        "created_at": utc_now(),
        "attempt": "0",
        "request": protocol.dumps(request),
        "metadata": protocol.dumps(metadata),
        "owner": owner,
    }


def record_of(fields: dict[str, str]) -> JobRecord:
    return JobRecord.from_hash({k.encode(): v.encode() for k, v in fields.items()})


async def create_job(
    redis: Redis, keys: Keys, *, job_id: str, model: str, request: dict, metadata: dict, ttl_s: int,
    owner: str = "",
) -> JobRecord:
    meta_key = keys.meta(job_id)
    fields = new_record(job_id, model, request, metadata, owner)
    created = datetime.now(timezone.utc).timestamp()
    # One command per key, each key in one Cluster slot (the indexes: one key each, only the job lists
    # read them); the record carries its TTL from this write. One round trip. lua/submit.lua writes the
    # same keys the same way, in one step with the task, where the topology allows it.
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hset(meta_key, mapping=fields)
        pipe.expire(meta_key, ttl_s)
        for index, kept in ((keys.recent(job_id), RECENT_JOBS_PER_BUCKET), (keys.owner_jobs(owner), RECENT_JOBS_KEPT)):
            pipe.zadd(index, {job_id: created})
            pipe.zremrangebyrank(index, 0, -kept - 1)
        pipe.expire(keys.owner_jobs(owner), ttl_s)
        await pipe.execute()
    return record_of(fields)


async def load_owner(redis: Redis, keys: Keys, job_id: str) -> str | None:
    """The job's owner ("" without keys), None for no such job: one small read, whoever asks."""
    return _text(await redis.hget(keys.meta(job_id), "owner"))


async def load_job(redis: Redis, keys: Keys, job_id: str) -> JobRecord | None:
    raw = await redis.hgetall(keys.meta(job_id))
    return JobRecord.from_hash(raw) if raw else None


async def delete_job(redis: Redis, keys: Keys, job_id: str) -> None:
    await redis.delete(keys.meta(job_id), keys.events(job_id))


async def withdraw_job(redis: Redis, keys: Keys, job_id: str) -> bool:
    """Delete a job no worker has started (queued, attempt 0); False if one has. One key, watched:
    a worker starting it in between makes the delete fail, never both."""
    meta = keys.meta(job_id)
    async with redis.pipeline(transaction=True) as pipe:
        for _ in range(5):
            try:
                await pipe.watch(meta)
                status, attempt = await pipe.hmget(meta, ["status", "attempt"])
                if status is None:
                    await pipe.unwatch()
                    return True
                if status != JobStatus.QUEUED.encode() or attempt != b"0":
                    await pipe.unwatch()
                    return False
                pipe.multi()
                pipe.delete(meta)
                await pipe.execute()
                return True
            except WatchError:
                continue
    return False


def _started(reply: list) -> Started:
    """start.lua's reply: the outcome, and the attempt when one runs."""
    return Started(StartOutcome(_text(reply[0])), int(reply[1]) if len(reply) > 1 else 0)


class JobScripts:
    """The store's Lua scripts (tokenrelay/core/lua/), registered once per Redis client. Each touches one slot."""

    def __init__(self, redis: Redis | RedisCluster, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._cancel = redis.register_script(load_script("cancel"))
        self._start = redis.register_script(load_script("start"))
        self._finish = redis.register_script(load_script("finish"))
        self._claim = redis.register_script(load_script("claim_lost"))
        self._untrack = redis.register_script(load_script("untrack"))

    async def cancel(self, job_id: str, retention_s: int) -> Cancelled:
        end = protocol.dumps(events.end(JobStatus.CANCELLED).data)
        keys = [self.keys.meta(job_id), self.keys.events(job_id)]
        reply = await self._cancel(keys=keys, args=[end, utc_now(), retention_s, self.keys.live(job_id)])
        return Cancelled(CancelOutcome(_text(reply[0])), JobStatus(_text(reply[1])) if len(reply) > 1 else None)

    async def start(self, job_id: str, lease_ms: int, ttl_s: int) -> Started:
        reply = await self._start(keys=[self.keys.meta(job_id), self.keys.lease(job_id)],
                                  args=[lease_ms, utc_now(), ttl_s])
        return _started(reply)

    async def begin(self, job_id: str, worker_id: str, check_at_ms: int, lease_ms: int, ttl_s: int
                    ) -> tuple[Started, JobRecord | None]:
        """A worker takes a job: lists it in the running index, then starts an attempt that names the
        worker, and reads the record; the record is None unless the attempt runs.

        The index entry must exist before the lease: a worker lost between the two leaves an entry the
        reapers look at, never a running job they cannot find. One server runs a pipeline's commands in
        order, so there both go in one round trip; a cluster may send them to two primaries at once, so
        there the start waits for the entry."""
        keys, args = [self.keys.meta(job_id), self.keys.lease(job_id)], [lease_ms, utc_now(), ttl_s, worker_id]
        if isinstance(self.redis, RedisCluster):
            await self.track([job_id], check_at_ms)
            reply = await self._start(keys=keys, args=args)
        else:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.zadd(self.keys.running(job_id), {job_id: check_at_ms})
                # EVAL, not the registered script: a pipeline would check that the script exists first.
                pipe.eval(self._start.script, len(keys), *keys, *args)
                _, reply = await pipe.execute()
        started = _started(reply)
        if len(reply) < 3:
            return started, None
        flat = reply[2]
        return started, JobRecord.from_hash(dict(zip(flat[::2], flat[1::2])))

    async def finish(
        self, job_id: str, attempt: int, end_id: str, end_data: str, retention_s: int, fields: dict[str, str],
        error_entry: tuple[str, str] | None = None,
    ) -> FinishOutcome:
        flat: list[str] = []
        for name, value in fields.items():
            flat += [name, value]
        error_id, error_data = error_entry or ("", "")
        keys = [self.keys.meta(job_id), self.keys.events(job_id), self.keys.lease(job_id)]
        args = [attempt, end_id, end_data, retention_s, error_id, error_data, self.keys.live(job_id), *flat]
        return FinishOutcome(_text(await self._finish(keys=keys, args=args)))

    async def claim_lost(self, job_id: str) -> ClaimOutcome:
        return ClaimOutcome(_text(await self._claim(keys=[self.keys.meta(job_id), self.keys.lease(job_id)])))

    async def renew(self, leases: dict[str, int], lease_ms: int) -> dict[str, bool]:
        """Renew the leases of running attempts (job id -> attempt), one pipelined round for all."""
        # EVAL, not EVALSHA: a cluster pipeline cannot load a script that a node (a new primary) lacks.
        script = load_script("renew")
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id, attempt in leases.items():
                pipe.eval(script, 2, self.keys.meta(job_id), self.keys.lease(job_id), attempt, lease_ms)
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
        """Drop a job from the running index; with `score`, only if nobody tracked it again since."""
        if score is None:
            await self.redis.zrem(self.keys.running(job_id), job_id)
        else:
            await self._untrack(keys=[self.keys.running(job_id)], args=[job_id, score])

    async def settle(self, job_id: str, check_at_ms: int) -> None:
        """Move a job whose end was written from the running index to the settling one, in that order: the
        end and the running entry live in different slots, and a failover of the job's primary may lose the
        end after the entry was dropped; a reaper looks at the job once more at `check_at_ms`."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(self.keys.settling(job_id), {job_id: check_at_ms})
            pipe.zrem(self.keys.running(job_id), job_id)
            await pipe.execute()

    async def claim_lost_many(self, job_ids: list[str]) -> list[ClaimOutcome]:
        """`claim_lost` for several jobs, one pipelined round."""
        script = load_script("claim_lost")  # EVAL: a cluster pipeline cannot load a script a new primary lacks
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.eval(script, 2, self.keys.meta(job_id), self.keys.lease(job_id))
            replies = await pipe.execute()
        return [ClaimOutcome(_text(reply)) for reply in replies]

    async def unsettle(self, entries: dict[str, float]) -> None:
        """Drop jobs (job id -> the score read) from the settling index, unless settled again since."""
        script = load_script("untrack")
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id, score in entries.items():
                pipe.eval(script, 1, self.keys.settling(job_id), job_id, score)
            await pipe.execute()
