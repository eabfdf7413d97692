"""A worker process's asyncio side: one event loop thread that runs every job of the process.

Deliberate choices (read before changing):
- Celery's threads pool hands each task to a thread that only waits on a future; the job itself
  runs as a coroutine here. Hundreds of concurrent jobs cost one loop, one Redis pool and one
  batched publisher, not hundreds of connections and round trips.
- Cancel is cooperative: a pub/sub message (one subscription per process) cancels the job's
  coroutine wherever it awaits, so it stops between tokens even when the provider is slow. The
  cancel flags are also read on the heartbeat's interval, in case a message was missed while
  reconnecting.
- Liveness is a lease per running job (a key in the job's slot that expires), renewed for all of them
  in one round trip by a thread with its own connection (worker/heartbeat.py), never behind job
  traffic. Running jobs are also listed in the bucketed running index (tokenrelay/core/keys.py);
  reapers walk its buckets and hand jobs whose lease ran out back to the queue as a new attempt,
  unless their worker's liveness key is fresh.
- A job that ended moves to the settling index for one lease, and a reaper then checks that its end is
  still there. The end (in the job's slot) and the running index (another slot, maybe another primary)
  are written apart: a failover that loses the end must not leave the job `running` with nothing that
  watches it. Such a job is tracked again and, once its restored lease runs out, runs as a new attempt.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable

from redis.exceptions import RedisError

from tokenrelay.core.connections import async_client
from tokenrelay.core.heap import settle_heap
from tokenrelay.core.keys import Keys
from tokenrelay.core.status import TERMINAL_STATUSES, ClaimOutcome
from tokenrelay.core.settings import Settings
from tokenrelay.core.store import JobScripts
from tokenrelay.engine import graphs

from .heartbeat import Heartbeat
from .jobs import JobServices, execute_job
from .metrics import worker_metrics
from .publisher import StreamPublisher

log = logging.getLogger("tokenrelay.worker")

POOL_WAIT_S = 20.0
REAP_BATCH = 100  # per bucket and round
CLOSE_WAIT_S = 3.0
# A live worker's expired lease is left alone for this many lease periods: past that, the worker
# is alive but has lost track of the job, and the job is claimed all the same.
LIVE_WORKER_GRACE_LEASES = 3


class WorkerRuntime:
    def __init__(self, settings: Settings, enqueue: Callable[[str], None]) -> None:
        self.settings = settings
        self.enqueue = enqueue
        self.keys = Keys(settings.key_prefix)
        # Names this process in Redis keys (its liveness key): only the characters keys.py accepts.
        self.worker_id = re.sub(r"[^A-Za-z0-9_.@:-]", "_", f"{socket.gethostname()}"[:180]) + f":{os.getpid()}"
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="tokenrelay-loop", daemon=True)
        self._services: JobServices | None = None
        self._publisher_redis = None  # the publisher's own client, opened with the services
        self._background: list[asyncio.Task] = []
        self._ready = threading.Event()
        self._closing = False
        self._settled_checked_ms = 0
        self._settling_backlog = False  # the last look found a full batch: look again at the next round

    # -- lifecycle, called from Celery's threads -------------------------------------------------

    def start(self) -> None:
        # Import provider clients now: an import inside the loop would stall every running job.
        import langchain_openai  # noqa: F401

        graphs.preload(self.settings)
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._open(), self.loop).result()
        except BaseException:
            # Redis unreachable (a failover, a restart): no half-started runtime stays behind for jobs to
            # wait on; the caller raises, and the next job starts a runtime again.
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(CLOSE_WAIT_S)
            raise
        settle_heap()
        self._ready.set()

    def stop(self, timeout_s: float = 10.0) -> None:
        if not self._thread.is_alive():
            return
        try:
            asyncio.run_coroutine_threadsafe(self._close(), self.loop).result(timeout_s)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout_s)

    def run_job(self, job_id: str) -> str:
        """Run one attempt of a job to its end; blocks the calling (Celery) thread."""
        self._ready.wait()
        metrics = worker_metrics()
        started = time.monotonic()
        metrics.running.inc()
        try:
            status = asyncio.run_coroutine_threadsafe(execute_job(self._services, job_id), self.loop).result()
        except RedisError:
            metrics.redis_errors.inc()
            raise
        finally:
            metrics.running.dec()
        metrics.jobs.labels(status).inc()
        if status in TERMINAL_STATUSES:
            metrics.duration.labels(status).observe(time.monotonic() - started)
        return status

    # -- inside the loop ----------------------------------------------------------------------------

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    async def _open(self) -> None:
        settings = self.settings
        # A fixed pool that jobs wait on: hundreds of jobs share a few connections.
        redis = async_client(settings.redis_target, max_connections=settings.redis_pool_size * 2,
                             pool_wait_s=POOL_WAIT_S, socket_timeout=10,
                             client_name=f"tokenrelay-worker:{self.worker_id}")
        # The publisher's own connections: no per-reply timeout (see worker/publisher.py), never
        # waiting behind job starts and reapers for a connection.
        self._publisher_redis = async_client(settings.redis_target, max_connections=2, pool_wait_s=POOL_WAIT_S,
                                             socket_timeout=None,
                                             client_name=f"tokenrelay-publisher:{self.worker_id}")
        publisher = StreamPublisher(
            self._publisher_redis,
            self.keys,
            running_ttl_s=int(settings.job_timeout_s + settings.retention_s),
            flush_window_ms=settings.flush_window_ms,
            event_timestamps=settings.event_timestamps,
            write_retry_s=settings.write_retry_s,
        )
        self._services = services = JobServices(settings, redis, self.keys, JobScripts(redis, self.keys), publisher,
                                                worker_id=self.worker_id)
        self._heartbeat = Heartbeat(settings.redis_target, self.keys, self.worker_id, services.lease_ms,
                                    settings.lease_ttl_s / 3,
                                    lambda: {job_id: job.attempt for job_id, job in list(services.running.items())})
        await asyncio.to_thread(self._heartbeat.start)
        publisher.start()
        self._background = [
            asyncio.create_task(self._forever(self._check_cancel_flags, settings.lease_ttl_s / 3), name="cancel-flags"),
            asyncio.create_task(self._forever(self._reap, settings.reaper_interval_s), name="reaper"),
            asyncio.create_task(self._listen_for_cancels(), name="cancel-listener"),
        ]

    async def _close(self) -> None:
        services = self._services
        self._closing = True
        for task in self._background:
            task.cancel()
        await asyncio.wait(self._background, timeout=CLOSE_WAIT_S)
        if services:
            await asyncio.to_thread(self._heartbeat.stop)
            await services.publisher.stop()
            try:
                await services.redis.zrem(self.keys.workers, self.worker_id)
            except Exception:  # noqa: BLE001 - Redis may be gone at shutdown
                pass
            await services.redis.aclose()
            await self._publisher_redis.aclose()

    async def _forever(self, step: Callable, interval_s: float) -> None:
        # Checks the flag too: a cancel that lands inside a Redis call can be swallowed there.
        while not self._closing:
            try:
                await step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a background loop must outlive Redis hiccups
                log.warning("%s failed: %s", step.__name__, exc)
            await asyncio.sleep(interval_s)

    async def _check_cancel_flags(self) -> None:
        """The safety net for a cancel message missed while pub/sub reconnected."""
        services = self._services
        job_ids = list(services.running)
        if job_ids:
            async with services.redis.pipeline(transaction=False) as pipe:
                for job_id in job_ids:
                    pipe.hget(self.keys.meta(job_id), "cancel_requested")
                flags = await pipe.execute()
            for job_id, flag in zip(job_ids, flags):
                if flag == b"1":
                    self._cancel_local(job_id)

    async def _reap(self) -> None:
        """Walk the running index's buckets; re-queue jobs whose lease ran out."""
        services = self._services
        now_ms = int(time.time() * 1000)
        async with services.redis.pipeline(transaction=False) as pipe:
            for bucket in self.keys.running_buckets:
                pipe.zrangebyscore(bucket, "-inf", now_ms, start=0, num=REAP_BATCH, withscores=True)
            due = await pipe.execute()
        metrics = worker_metrics()
        for entries in due:
            for raw, check_at_ms in entries:
                job_id = raw.decode()
                if job_id in services.running:  # ours and alive: a renewal is late
                    continue
                expired_ms = now_ms - check_at_ms
                if expired_ms < LIVE_WORKER_GRACE_LEASES * services.lease_ms and await self._worker_alive(job_id):
                    metrics.leases_spared.inc()
                    continue
                outcome = await services.scripts.claim_lost(job_id)
                if outcome == ClaimOutcome.ALIVE:  # an attempt holds its lease; look again in a lease's time
                    await services.scripts.track([job_id], now_ms + services.lease_ms)
                    continue
                await services.scripts.untrack(job_id, check_at_ms)
                if outcome == ClaimOutcome.CLAIMED:
                    metrics.leases_claimed.inc()
                    log.warning("job %s lost its worker; queued again", job_id)
                    await asyncio.to_thread(self.enqueue, job_id)
        # Ended jobs are due a lease after their end: looking twice a lease is soon enough, and cheaper.
        if self._settling_backlog or now_ms - self._settled_checked_ms >= services.lease_ms / 2:
            self._settled_checked_ms = now_ms
            self._settling_backlog = await self._check_settled(now_ms)

    async def _check_settled(self, now_ms: int) -> bool:
        """Jobs that ended a lease ago: drop them from the settling index, unless a failover lost their end.
        True if a bucket had more due than one batch."""
        services = self._services
        async with services.redis.pipeline(transaction=False) as pipe:
            for bucket in self.keys.settling_buckets:
                pipe.zrangebyscore(bucket, "-inf", now_ms, start=0, num=REAP_BATCH, withscores=True)
            batches = await pipe.execute()
        due = {raw.decode(): score for entries in batches for raw, score in entries}
        if not due:
            return False
        outcomes = await services.scripts.claim_lost_many(list(due))
        lost = [job_id for job_id, outcome in zip(due, outcomes) if outcome == ClaimOutcome.ALIVE]
        if lost:  # the lease of the attempt that ended is back: watch it until it runs out
            log.warning("jobs %s lost their end in a failover; watched again", ", ".join(lost))
            await services.scripts.track(lost, now_ms + services.lease_ms)
        for job_id, outcome in zip(due, outcomes):
            if outcome == ClaimOutcome.CLAIMED:
                worker_metrics().leases_claimed.inc()
                log.warning("job %s lost its end in a failover; queued again", job_id)
                await asyncio.to_thread(self.enqueue, job_id)
        await services.scripts.unsettle(due)
        return any(len(entries) >= REAP_BATCH for entries in batches)

    async def _worker_alive(self, job_id: str) -> bool:
        """The job's worker (recorded when it started) renewed its liveness key within a lease."""
        redis = self._services.redis
        worker_id = await redis.hget(self.keys.meta(job_id), "worker")
        if not worker_id:
            return False
        try:
            return bool(await redis.exists(self.keys.worker_alive(worker_id.decode())))
        except ValueError:  # not a worker id this code writes
            return False

    async def _listen_for_cancels(self) -> None:
        while not self._closing:
            pubsub = self._services.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.keys.cancel_channel)
                async for message in pubsub.listen():
                    if message and message.get("type") == "message":
                        self._cancel_local(message["data"].decode())
            except asyncio.CancelledError:
                await pubsub.aclose()
                raise
            except Exception as exc:  # noqa: BLE001 - reconnect after any Redis error
                log.warning("cancel listener reconnecting: %s", exc)
                await pubsub.aclose()
                await asyncio.sleep(0.5)

    def _cancel_local(self, job_id: str) -> None:
        job = self._services.running.get(job_id)
        if job is not None:
            log.info("job %s cancel requested", job_id)
            job.stop("cancelled")
