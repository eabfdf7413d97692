"""A worker process's Prometheus metrics, served on `worker_metrics_port` when it is set.

One registry per process, built on first use (never at import). With the threads pool every job
of a worker runs in its one process, so its numbers are complete; scrape each worker process.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timezone

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)

log = logging.getLogger("tokenrelay.worker")

# Seconds; LLM jobs run from well under a second to many minutes.
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
DURATION_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


class WorkerMetrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.jobs = Counter("tokenrelay_worker_jobs", "Job attempts this worker ran to an end, by outcome "
                            "(succeeded, failed, cancelled, superseded, or why nothing ran).", ["status"],
                            registry=registry)
        self.running = Gauge("tokenrelay_worker_running_jobs", "Jobs running in this worker process now.",
                             registry=registry)
        self.ttft = Histogram("tokenrelay_time_to_first_token_seconds", "From a job's submission to its first "
                              "token, queue wait included.", buckets=TTFT_BUCKETS, registry=registry)
        self.duration = Histogram("tokenrelay_job_duration_seconds", "One attempt of a job, start to end, by "
                                  "outcome.", ["status"], buckets=DURATION_BUCKETS, registry=registry)
        self.tokens = Counter("tokenrelay_tokens_generated", "Tokens produced by models on this worker.",
                              registry=registry)
        self.redis_errors = Counter("tokenrelay_worker_redis_errors", "Job runs that failed on a Redis error "
                                    "(the task is retried).", registry=registry)
        self.heartbeat_gap = Gauge("tokenrelay_worker_heartbeat_gap_max_seconds", "Longest time between two "
                                   "lease renewals of this process since it started (the lease is lease_ttl_s).",
                                   registry=registry)
        self.leases_claimed = Counter("tokenrelay_worker_leases_claimed", "Jobs this worker's reaper claimed "
                                      "from a lost worker and queued again.", registry=registry)
        self.leases_spared = Counter("tokenrelay_worker_leases_spared", "Expired leases this worker's reaper left "
                                     "alone because their worker's liveness key was fresh.", registry=registry)
        self._server_started = False

    def first_token(self, created_at: str) -> None:
        try:
            created = datetime.fromisoformat(created_at.replace("Z", "+00:00"))
        except ValueError:
            return
        self.ttft.observe(max(0.0, (datetime.now(timezone.utc) - created).total_seconds()))

    def serve(self, port: int) -> None:
        if not self._server_started:
            start_http_server(port, registry=self.registry)
            self._server_started = True
            log.info("worker metrics on :%d/metrics", port)


_metrics: WorkerMetrics | None = None
_lock = threading.Lock()


def worker_metrics() -> WorkerMetrics:
    global _metrics
    with _lock:
        if _metrics is None:
            _metrics = WorkerMetrics()
        return _metrics
