"""The outbox: jobs whose record exists but whose task the broker has not confirmed yet.

A submit adds its job before sending the task and removes it once the broker took it. Every
gateway sweeps it: a job left there longer than `outbox_grace_s` (its gateway died, or the send
was cut short) and still queued with no attempt gets its task sent. Each entry is claimed by one
sweeper (ZREM returns 1 once); a task sent twice is harmless, since the job's lease lets one
attempt run.
"""

from __future__ import annotations

import asyncio
import logging
import time

from redis.asyncio import Redis

from tokenrelay.core.keys import Keys
from tokenrelay.core.status import JobStatus

log = logging.getLogger("tokenrelay.gateway")

SWEEP_INTERVAL_S = 1.0
SWEEP_BATCH = 100


async def add(redis: Redis, keys: Keys, job_id: str) -> None:
    await redis.zadd(keys.outbox, {job_id: time.time() * 1000})


async def confirm(redis: Redis, keys: Keys, job_id: str) -> None:
    await redis.zrem(keys.outbox, job_id)


async def sweep(state) -> int:
    """Send the task of every job left in the outbox past the grace time; returns how many."""
    redis, keys = state.redis, state.keys
    due = await redis.zrangebyscore(keys.outbox, "-inf", time.time() * 1000 - state.settings.outbox_grace_s * 1000,
                                    start=0, num=SWEEP_BATCH)
    sent = 0
    for raw in due:
        job_id = raw.decode()
        if not await redis.zrem(keys.outbox, job_id):
            continue  # another gateway's sweep took it
        status, attempt = await redis.hmget(keys.meta(job_id), ["status", "attempt"])
        if status != JobStatus.QUEUED.encode() or attempt != b"0":
            continue  # started, cancelled, withdrawn or expired: nothing to send
        try:
            await state.tasks.send(job_id)
        except Exception:
            await add(redis, keys, job_id)  # the broker is still away: the next sweep tries again
            raise
        log.warning("job %s was in the outbox for over %s s; its task was sent by the sweep", job_id,
                    state.settings.outbox_grace_s)
        sent += 1
    return sent


class OutboxSweeper:
    def __init__(self, state) -> None:
        self.state = state
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="tokenrelay-outbox")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            try:
                await sweep(self.state)
            except Exception as exc:  # noqa: BLE001 - Redis or the broker away: try again next time
                log.warning("outbox sweep failed: %s", type(exc).__name__)
