"""Quotas: requests per minute and active jobs per key, global queue depth, readers per job.

Each refusal is a LimitExceeded (429, Retry-After) whose `param` names the setting.
Deliberate choices (read before changing):
- Per-key counters live in Redis, so every gateway enforces the same budget. When Redis is down
  they let the request through: the route then answers 503 itself, which says more.
- Active jobs are counted from their records (a job stops counting when its record says it
  finished or it expired), so workers need not know about quotas and a lost decrement cannot
  leak a slot. The new job is added first and taken back if it went over: two concurrent
  submits can both be refused, never both admitted past the limit.
- Queue depth is the length of the Celery queue (the messages no worker has taken yet): on the job
  store's Redis, read in the submit's own round trip (LLEN, or inside submit.lua); on any other
  broker (RabbitMQ, a Redis of its own), the task sender's measurement, at most QUEUE_DEPTH_MAX_AGE_S
  old, plus what this process sent since.
- Readers per job are counted per gateway process, where their memory is.
- A request that submits a job in one step (tokenrelay/core/submit.py) is counted for
  `rate_limit_per_minute` inside the submit's own script, not by a round trip of its own first: the
  middleware leaves a `RequestCount` in the request's state and the submit takes it. A request that
  never reaches the script (a 400 on its body, a saturated gateway) is counted once it was answered,
  so every request still counts once; only its refusal comes from the script (after the body's checks).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio import Redis
from starlette.types import ASGIApp, Receive, Scope, Send

from tokenrelay.core.keys import Keys
from tokenrelay.core.settings import Settings
from tokenrelay.core.tasks import QUEUE_DEPTH_MAX_AGE_S
from tokenrelay.core.status import TERMINAL_STATUSES
from tokenrelay.errors import LimitExceeded

from .auth import STATE_FIELD, Principal
from .errors import error_response

log = logging.getLogger("tokenrelay.gateway")

WINDOW_S = 60
RATE_KEY_TTL_S = 2 * WINDOW_S  # a window's counter outlives its minute
# The count is skipped when Redis is this slow: the route will find out and answer 503 itself.
COUNT_TIMEOUT_S = 1.0
QUEUE_RETRY_AFTER_S = 5
ACTIVE_RETRY_AFTER_S = 2


def _quota_key(keys: Keys, principal: Principal, what: str) -> str:
    # Principal names are validated at start-up (api_keys) or signed by us (stream tokens).
    return f"{keys.prefix}:quota:{principal.name}:{what}"


COUNT_FIELD = "tokenrelay_request_count"  # request.state: this request's RequestCount, not made yet


def counted_in_submit(endpoint: Callable) -> Callable:
    """Marks a route that submits a job: with the one-step submit, the script counts its request."""
    endpoint.counted_in_submit = True
    return endpoint


def submit_paths(routes) -> frozenset[str]:
    """The paths of the routes marked with `counted_in_submit` (the middleware counts their POSTs so)."""
    return frozenset(route.path for route in routes
                     if getattr(getattr(route, "endpoint", None), "counted_in_submit", False))


@dataclass
class RequestCount:
    """A request's count in its key's per-minute window, left for the submit's script to make."""

    key: str  # the window's counter
    limit: int
    window: int
    taken: bool = False

    def take(self) -> "RequestCount":
        self.taken = True
        return self

    def refusal(self) -> LimitExceeded:
        return rate_limited(self.limit, self.window, time.time())


def rate_limited(per_minute: int, window: int, now: float) -> LimitExceeded:
    retry_after = int((window + 1) * WINDOW_S - now) + 1
    return LimitExceeded(f"more than {per_minute} requests per minute for this key "
                         f"(rate_limit_per_minute); retry in {retry_after} s",
                         limit="rate_limit_per_minute", retry_after_s=retry_after)


class RateLimit:
    """Requests per minute per key, in fixed one-minute windows shared by all gateways."""

    def __init__(self, app: ASGIApp, per_minute: int, submit_paths: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.per_minute = per_minute
        self.submit_paths = submit_paths  # counted by the submit's script where it runs in one step

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        principal = scope.get("state", {}).get(STATE_FIELD) if scope["type"] == "http" else None
        if principal is None:
            await self.app(scope, receive, send)
            return
        state = scope["app"].state
        if (scope["path"] in self.submit_paths and scope["method"] == "POST"
                and getattr(state, "submit_script", None) is not None):
            window = int(time.time() // WINDOW_S)
            count = RequestCount(_quota_key(state.keys, principal, f"rpm:{window}"), self.per_minute, window)
            scope["state"][COUNT_FIELD] = count
            await self.app(scope, receive, send)
            if not count.taken:  # answered before its submit ran: it counts all the same
                await self._check(state, principal)
            return
        refusal = await self._check(state, principal)
        if refusal is not None:
            response = error_response(429, LimitExceeded.error_type, refusal.message, refusal.param,
                                      headers={"Retry-After": str(refusal.retry_after_s)})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _check(self, state, principal: Principal) -> LimitExceeded | None:
        now = time.time()
        window = int(now // WINDOW_S)
        key = _quota_key(state.keys, principal, f"rpm:{window}")
        try:
            async with asyncio.timeout(COUNT_TIMEOUT_S), state.redis.pipeline(transaction=False) as pipe:
                pipe.incr(key)
                pipe.expire(key, RATE_KEY_TTL_S)
                count, _ = await pipe.execute()
        except Exception:  # noqa: BLE001 - Redis trouble of any kind: the route will say 503
            return None
        if count <= self.per_minute:
            return None
        return rate_limited(self.per_minute, window, now)


async def queue_depth(state, max_age_s: float = QUEUE_DEPTH_MAX_AGE_S) -> int:
    """Task messages waiting in the job queue. On the Redis that also holds the streams: the list's
    length, with the gateway's own client and its short timeouts; on any other broker, the task
    sender's measurement (a Redis broker URL: LLEN there; RabbitMQ, Sentinel: a passive queue declare)."""
    if state.settings.broker_url is None:
        return await state.redis.llen(state.settings.queue_name)
    return await state.tasks.queue_depth(max_age_s)


def queue_full(limit: int) -> LimitExceeded:
    return LimitExceeded(f"the job queue is full ({limit} jobs waiting, max_queued_jobs); retry shortly",
                         limit="max_queued_jobs", retry_after_s=QUEUE_RETRY_AFTER_S)


def active_full(settings: Settings) -> LimitExceeded:
    return LimitExceeded(f"this key already has {settings.max_active_jobs_per_key} queued or running jobs "
                         "(max_active_jobs_per_key); wait for one to finish or cancel one",
                         limit="max_active_jobs_per_key", retry_after_s=ACTIVE_RETRY_AFTER_S)


def active_key(keys: Keys, principal: Principal) -> str:
    """The key's set of queued or running jobs (zset: job id -> when submitted)."""
    return _quota_key(keys, principal, "active")


async def check_queue_depth(state) -> None:
    """Refuse a submit while `max_queued_jobs` messages wait in the broker's queue (any broker)."""
    limit = state.settings.max_queued_jobs
    if await queue_depth(state) >= limit:
        raise queue_full(limit)


async def admit_active_job(redis: Redis, keys: Keys, settings: Settings, principal: Principal, job_id: str) -> None:
    """Count `job_id` against the key's active jobs, or raise LimitExceeded.

    One MULTI in the common case. The set also holds jobs that finished since (nothing removes
    them as they end): only a count over the limit looks up its members' statuses and drops the
    finished ones, so a submit costs O(1) commands, not one per job the key has in flight."""
    key = active_key(keys, principal)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.zadd(key, {job_id: time.time()})
        pipe.zcard(key)
        pipe.expire(key, int(settings.job_timeout_s + settings.retention_s))
        _, count, _ = await pipe.execute()
    if count > settings.max_active_jobs_per_key:
        count -= await drop_finished(redis, keys, key, job_id)
    if count > settings.max_active_jobs_per_key:
        await redis.zrem(key, job_id)
        raise active_full(settings)


async def drop_finished(redis: Redis, keys: Keys, key: str, job_id: str) -> int:
    """Remove the set's finished (or expired) jobs; how many were removed."""
    members = [raw.decode() for raw in await redis.zrange(key, 0, -1)]
    members = [member for member in members if member != job_id]
    if not members:
        return 0
    async with redis.pipeline(transaction=False) as pipe:
        for member in members:
            pipe.hget(keys.meta(member), "status")
        statuses = await pipe.execute()
    done = [m for m, s in zip(members, statuses) if s is None or s.decode() in TERMINAL_STATUSES]
    return await redis.zrem(key, *done) if done else 0


async def release_active_job(redis: Redis, keys: Keys, principal: Principal, job_id: str) -> None:
    await redis.zrem(active_key(keys, principal), job_id)


class ReaderSlots:
    """Open streams per job in this process."""

    def __init__(self, per_job: int) -> None:
        self.per_job = per_job
        self.open: Counter[str] = Counter()

    def take(self, job_id: str) -> None:
        if self.open[job_id] >= self.per_job:
            raise LimitExceeded(f"this job already has {self.per_job} open streams on this gateway "
                                "(max_readers_per_job)", limit="max_readers_per_job", retry_after_s=1)
        self.open[job_id] += 1

    def release(self, job_id: str) -> None:
        self.open[job_id] -= 1
        if self.open[job_id] <= 0:
            del self.open[job_id]


STREAM_LIMIT_FRAME = b": stream time limit reached (max_stream_s); reconnect with Last-Event-ID\n\n"
