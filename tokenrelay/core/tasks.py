"""Sending a job to the workers: the Celery app's broker settings and a sender the gateway uses.

The gateway needs only this to enqueue a job id: it never imports the worker, so it never loads
LangChain. The worker builds its app from the same `create_celery_app` and adds the task to it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from celery import Celery
from kombu.exceptions import ChannelError

from .broker import SENTINEL_TRANSPORT
from .broker import TRANSPORT as REDIS_TRANSPORT
from .settings import Settings

TASK_NAME = "tokenrelay.run_job"
# Submits check the queue's depth (max_queued_jobs); one measurement serves the submits of this long.
QUEUE_DEPTH_MAX_AGE_S = 0.25


def create_celery_app(settings: Settings) -> Celery:
    """A Celery app configured for no loss, with no task registered (the worker adds its one task)."""
    broker_url, transport_options = settings.celery_broker
    app = Celery("tokenrelay", broker=broker_url, set_as_current=False)
    app.conf.update(
        # JSON only: pickle from a reachable broker is remote code execution.
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        # No loss: acknowledge after the job ran, requeue when the process running it dies.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=settings.queue_name,
        # Redelivery after visibility_timeout_s, give or take a scan interval (kombu's default scans
        # about every 100 s, which would make the timeout meaningless when it is short).
        broker_transport_options={"visibility_timeout": settings.visibility_timeout_s,
                                  "unacked_restore_interval": max(1, min(10, settings.visibility_timeout_s // 4)),
                                  "unacked_restore_throttle": 1, **transport_options},
        broker_connection_retry_on_startup=True,
        # Jobs wait on providers, not on the CPU: threads, each only waiting on the process's loop.
        worker_pool="threads",
        worker_concurrency=settings.worker_concurrency,
        worker_hijack_root_logger=False,
        # The threads pool has no time limits; jobs enforce job_timeout_s themselves. These
        # apply when someone runs the prefork pool.
        task_time_limit=int(settings.job_timeout_s) + 60,
        task_soft_time_limit=int(settings.job_timeout_s) + 30,
        worker_send_task_events=False,
    )
    if broker_url.startswith(("redis://", "rediss://", "unix://")):
        # Survives a broker connection loss with tasks in flight (see tokenrelay/core/broker.py).
        app.conf.broker_transport = REDIS_TRANSPORT
    elif broker_url.startswith("sentinel://"):
        app.conf.broker_transport = SENTINEL_TRANSPORT
    app.tokenrelay_settings = settings
    return app


def enqueue_job(app: Celery, job_id: str, producer=None) -> None:
    settings: Settings = app.tokenrelay_settings
    app.send_task(TASK_NAME, args=[job_id], queue=settings.queue_name, producer=producer)


class DepthGauge:
    """A queue's depth for submits: measured at most every `max_age_s`, in the background, never in a
    submit's way (a slow broker delays the measurement, not the submit); plus what this process sent since."""

    def __init__(self, measure: Callable[[], Awaitable[int]]) -> None:
        self._measure_now = measure
        self._depth: tuple[float, int] | None = None  # (when measured, messages waiting)
        self._measuring: asyncio.Future | None = None

    async def measure(self) -> int:
        started = time.monotonic()
        depth = await self._measure_now()
        self._depth = (started, depth)
        return depth

    async def get(self, max_age_s: float = QUEUE_DEPTH_MAX_AGE_S) -> int:
        """`max_age_s` 0: measured now. Otherwise the last measurement (0 before the first), and a new
        one starts in the background once it is `max_age_s` old."""
        if not max_age_s:
            return await self.measure()
        now = time.monotonic()
        if (self._depth is None or now - self._depth[0] >= max_age_s) and (
                self._measuring is None or self._measuring.done()):
            self._measuring = asyncio.ensure_future(self.measure())
            self._measuring.add_done_callback(lambda done: done.cancelled() or done.exception())
        return self._depth[1] if self._depth is not None else 0

    def sent(self) -> None:
        """Until the next measurement, count a task this process queued."""
        if self._depth is not None:
            self._depth = (self._depth[0], self._depth[1] + 1)


class TaskSender:
    """Sends job tasks from one thread holding one producer.

    Kombu producers are not thread-safe, and Celery builds per-thread state (a result backend,
    broker connections) in every new thread that sends: a pool of sender threads costs imports
    and connections under a burst of submits, and starves the event loop of the GIL meanwhile.
    """

    def __init__(self, app: Celery) -> None:
        self.app = app
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tokenrelay-send")
        self._producer = None
        # The queue's depth is measured on a thread and a connection of its own, never in a submit's way:
        # a slow broker delays the measurement, not the sends.
        self._depth_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tokenrelay-depth")
        self._depth_connection = None
        self._depth = DepthGauge(self._measure)

    def _send(self, job_id: str) -> None:
        if self._producer is None:
            self._producer = self.app.producer_pool.acquire(block=True)
        try:
            enqueue_job(self.app, job_id, self._producer)
        except Exception:
            self._drop_producer()
            raise

    def _drop_producer(self) -> None:
        _release_quietly(self._producer)
        self._producer = None

    def _drop_depth_connection(self) -> None:
        _release_quietly(self._depth_connection)
        self._depth_connection = None

    def _measure_depth(self) -> int:
        """Messages waiting in the job queue: a passive queue declare, on any broker (AMQP, Redis, Sentinel)."""
        if self._depth_connection is None:
            self._depth_connection = self.app.connection_for_read()
        try:
            declared = self._depth_connection.default_channel.queue_declare(
                queue=self.app.tokenrelay_settings.queue_name, passive=True)
            return declared.message_count
        except ChannelError as exc:
            self._drop_depth_connection()  # a refused declare closes the channel (AMQP)
            if getattr(exc, "code", None) == 404 or "NOT_FOUND" in str(exc):
                return 0  # not declared yet: nothing was ever queued
            raise
        except Exception:
            self._drop_depth_connection()
            raise

    async def _measure(self) -> int:
        return await asyncio.get_running_loop().run_in_executor(self._depth_executor, self._measure_depth)

    async def queue_depth(self, max_age_s: float = QUEUE_DEPTH_MAX_AGE_S) -> int:
        """Messages waiting in the job queue (see DepthGauge.get)."""
        return await self._depth.get(max_age_s)

    async def send(self, job_id: str) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._send, job_id)
        self._depth.sent()

    def close(self) -> None:
        self._executor.submit(self._drop_producer).result()
        self._executor.shutdown()
        self._depth_executor.submit(self._drop_depth_connection).result()
        self._depth_executor.shutdown()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)


def _release_quietly(resource) -> None:
    """Give back a kombu producer or connection that may be broken: it is being thrown away either way."""
    if resource is None:
        return
    try:
        resource.release()
    except Exception:  # noqa: BLE001 - a broken resource is being thrown away
        pass
