"""A submit in one round trip: lua/submit.lua counts the request against the key's requests per minute,
checks the queue's depth and the key's active jobs, and writes the record, its indexes, the Idempotency-Key and the Celery task message, atomically.

Only where every key it names is on one server: a single Redis (or a Sentinel's primary) that is also
the broker (no broker URL of its own). A cluster spreads these keys over slots, and a separate broker
is another server: both keep the step-by-step path (api/admission.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from redis.asyncio import Redis

from .keys import Keys
from .lua import load_script
from .settings import Settings
from .status import SubmitOutcome
from .store import RECENT_JOBS_KEPT, RECENT_JOBS_PER_BUCKET, JobRecord, new_record, record_of
from .task_message import RedisTaskSender, task_message


@dataclass(frozen=True)
class Admitted:
    outcome: SubmitOutcome
    record: JobRecord | None = None  # when ADMITTED
    held: bytes | None = None  # when HELD: the Idempotency-Key's stored value


@dataclass(frozen=True)
class NewJob:
    job_id: str
    model: str
    request: dict
    metadata: dict
    owner: str
    active_key: str  # the owner's set of queued or running jobs (api/quotas.py names it)
    idempotency: tuple[str, str] | None = None  # (key name, value to store) with an Idempotency-Key
    # The request's count for rate_limit_per_minute, made first: (the window's counter, limit, its TTL in s).
    rate: tuple[str, int, int] | None = None


def one_step_possible(settings: Settings) -> bool:
    """The job store is one server (or a Sentinel primary) and the broker is that same database."""
    return settings.broker_url is None and not settings.redis_target.is_cluster


class SubmitScript:
    """submit.lua on the gateway's client; the task message is built as RedisTaskSender would LPUSH it."""

    def __init__(self, redis: Redis, keys: Keys, settings: Settings, sender: RedisTaskSender) -> None:
        self.keys = keys
        self.queue = sender.queue
        self.origin = sender.origin
        self.max_queued = settings.max_queued_jobs
        self.max_active = settings.max_active_jobs_per_key
        self.ttl_s = int(settings.retention_s + settings.job_timeout_s)
        self._script = redis.register_script(load_script("submit"))

    async def __call__(self, job: NewJob) -> Admitted:
        fields = new_record(job.job_id, job.model, job.request, job.metadata, job.owner)
        flat: list[str] = []
        for name, value in fields.items():
            flat += [name, value]
        keys = [self.queue, job.active_key, self.keys.meta(job.job_id), self.keys.recent(job.job_id),
                self.keys.owner_jobs(job.owner)]
        rate_limit, rate_ttl_s = "", ""
        if job.rate is not None:
            keys.append(job.rate[0])
            rate_limit, rate_ttl_s = job.rate[1], job.rate[2]
        idempotency_value = ""
        if job.idempotency is not None:
            keys.append(job.idempotency[0])
            idempotency_value = job.idempotency[1]
        args = [self.max_queued, self.max_active, self.ttl_s, job.job_id, repr(time.time()), self.ttl_s,
                RECENT_JOBS_PER_BUCKET, RECENT_JOBS_KEPT, task_message(job.job_id, self.queue, self.origin),
                idempotency_value, rate_limit, rate_ttl_s, *flat]
        reply = await self._script(keys=keys, args=args)
        outcome = SubmitOutcome(reply[0].decode())
        if outcome is SubmitOutcome.HELD and idempotency_value and reply[1].decode() == idempotency_value:
            outcome = SubmitOutcome.ADMITTED  # a retry of this very script (its first answer was lost): it ran
        if outcome is SubmitOutcome.ADMITTED:
            return Admitted(outcome, record=record_of(fields))
        return Admitted(outcome, held=reply[1] if outcome is SubmitOutcome.HELD else None)
