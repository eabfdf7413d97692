"""The Celery edge: an app configured for no loss, and one task that hands a job to the runtime."""

from __future__ import annotations

import logging
import os
import threading

from celery import Celery, signals
from redis.exceptions import RedisError

from tokenrelay.core.logs import configure_logging
from tokenrelay.core.protocol import check_job_id
from tokenrelay.core.registry import unconfigured_models
from tokenrelay.core.settings import Settings
from tokenrelay.core.tasks import TASK_NAME, create_celery_app, enqueue_job

from .metrics import worker_metrics
from .runtime import WorkerRuntime

MAX_RETRY_DELAY_S = 30

log = logging.getLogger("tokenrelay.worker")


def create_worker_app(settings: Settings) -> Celery:
    """The Celery app of a worker process: the shared broker settings plus the one task that runs a job."""
    app = create_celery_app(settings)
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
            if warning := unconfigured_models(settings):
                log.warning(warning)
            try:
                runtime_holder.get()
            except RedisError as exc:
                log.warning("the job store is not reachable yet (%s); the first job starts the runtime again",
                            type(exc).__name__)
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
                runtime = WorkerRuntime(self.settings, lambda job_id: enqueue_job(self.app, job_id))
                # Raises while Redis is unreachable: the job's task is retried (see run_job), and
                # the next one starts a runtime again.
                runtime.start()
                self._runtime = runtime
            return self._runtime

    def close(self) -> None:
        with self._lock:
            if self._runtime is not None and self._runtime.pid == os.getpid():
                self._runtime.stop()
            self._runtime = None
