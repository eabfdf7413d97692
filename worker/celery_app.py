"""The Celery edge: an app configured for no loss, and one task that hands a job to the runtime."""

from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import ThreadPoolExecutor

from celery import Celery, signals
from redis.exceptions import RedisError

from tokenrelay.logs import configure_logging
from tokenrelay.protocol import check_job_id
from tokenrelay.settings import Settings

from .broker import TRANSPORT as REDIS_TRANSPORT
from .metrics import worker_metrics
from .runtime import WorkerRuntime

TASK_NAME = "tokenrelay.run_job"
MAX_RETRY_DELAY_S = 30


def create_celery_app(settings: Settings) -> Celery:
    app = Celery("tokenrelay", broker=settings.celery_broker_url, set_as_current=False)
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
                                  "unacked_restore_throttle": 1},
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
    if settings.celery_broker_url.startswith(("redis://", "rediss://", "unix://")):
        # Survives a broker connection loss with tasks in flight (see worker/broker.py).
        app.conf.broker_transport = REDIS_TRANSPORT
    app.tokenrelay_settings = settings
    runtime_holder = _RuntimeHolder(app, settings)
    app.tokenrelay_runtime = runtime_holder

    @app.task(name=TASK_NAME, bind=True, ignore_result=True, max_retries=None)
    def run_job(self, job_id: str) -> str:
        try:
            return runtime_holder.get().run_job(check_job_id(job_id))
        except RedisError as exc:
            # Redis failed before the job could start or finish: hand the message back for later.
            # Leases make the retry safe whatever the first try had done.
            delay = min(2 ** self.request.retries, MAX_RETRY_DELAY_S)
            raise self.retry(exc=exc, countdown=delay) from None

    def _start(sender=None, **_: object) -> None:
        if getattr(sender, "app", None) is app:
            runtime_holder.get()
            if settings.worker_metrics_port:
                worker_metrics().serve(settings.worker_metrics_port)

    def _stop(sender=None, **_: object) -> None:
        if getattr(sender, "app", None) is app or sender is None:
            runtime_holder.close()

    if settings.log_format == "json":
        # A receiver of setup_logging replaces Celery's own logging set-up in the worker.
        signals.setup_logging.connect(lambda **_: configure_logging(settings), weak=False,
                                      dispatch_uid="tokenrelay-logging")
    signals.worker_ready.connect(_start, weak=False)
    signals.worker_shutdown.connect(_stop, weak=False)
    signals.worker_process_shutdown.connect(lambda **_: runtime_holder.close(), weak=False)
    return app


def enqueue_job(app: Celery, job_id: str, producer=None) -> None:
    settings: Settings = app.tokenrelay_settings
    app.send_task(TASK_NAME, args=[job_id], queue=settings.queue_name, producer=producer)


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

    def _send(self, job_id: str) -> None:
        if self._producer is None:
            self._producer = self.app.producer_pool.acquire(block=True)
        try:
            enqueue_job(self.app, job_id, self._producer)
        except Exception:
            self._drop_producer()
            raise

    def _drop_producer(self) -> None:
        if self._producer is not None:
            try:
                self._producer.release()
            except Exception:  # noqa: BLE001 - a broken producer is being thrown away
                pass
            self._producer = None

    async def send(self, job_id: str) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._send, job_id)

    def close(self) -> None:
        self._executor.submit(self._drop_producer).result()
        self._executor.shutdown()


class _RuntimeHolder:
    """One runtime per process, started on first use (and again in a forked child)."""

    def __init__(self, app: Celery, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self._runtime: WorkerRuntime | None = None
        self._lock = threading.Lock()

    def get(self) -> WorkerRuntime:
        with self._lock:
            if self._runtime is None or self._runtime.pid != os.getpid():
                self._runtime = WorkerRuntime(self.settings, lambda job_id: enqueue_job(self.app, job_id))
                self._runtime.start()
            return self._runtime

    def close(self) -> None:
        with self._lock:
            if self._runtime is not None and self._runtime.pid == os.getpid():
                self._runtime.stop()
            self._runtime = None
