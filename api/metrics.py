"""The gateway's Prometheus metrics, served at `GET /metrics`.

Counters are kept as things happen; gauges that describe Redis (queue depth, running jobs, live
workers) are read from Redis when scraped, so every gateway reports the same cluster-wide values.
One registry per app: several apps in one process (tests) never share counters.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .quotas import queue_depth
from .auth import principal_of
from .errors import error_response
from .relay import RelayHooks

log = logging.getLogger("tokenrelay.gateway")

router = APIRouter(include_in_schema=False)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.jobs_submitted = Counter("tokenrelay_jobs_submitted", "Jobs accepted by this gateway.", ["model"],
                                      registry=registry)
        self.jobs = Gauge("tokenrelay_jobs", "Jobs by status: queued (task messages waiting in the broker) and "
                          "running (jobs holding a lease), cluster-wide.", ["status"], registry=registry)
        self.queue_depth = Gauge("tokenrelay_queue_depth", "Task messages waiting in the broker's job queue.",
                                 registry=registry)
        self.workers = Gauge("tokenrelay_workers_alive", "Worker processes that renewed their heartbeat recently.",
                             registry=registry)
        self.token_events = Counter("tokenrelay_token_events_relayed", "Token events sent to clients (one per "
                                    "reader).", registry=registry)
        self.active_streams = Gauge("tokenrelay_active_streams", "Jobs this gateway is relaying live.",
                                    registry=registry)
        self.active_readers = Gauge("tokenrelay_active_readers", "Clients reading a job's stream from this "
                                    "gateway.", registry=registry)
        self.slow_reader_disconnects = Counter("tokenrelay_slow_reader_disconnects", "Readers cut off because they "
                                               "fell client_buffer_events behind.", registry=registry)
        self.redis_errors = Counter("tokenrelay_redis_errors", "Redis commands that failed, by where.", ["where"],
                                    registry=registry)
        self.relay_reads = Counter("tokenrelay_relay_reads", "Read rounds of this gateway's relay (one pipeline "
                                   "of XRANGEs over the notified jobs, whatever the number of readers).", registry=registry)
        self.relay_entries_read = Counter("tokenrelay_relay_entries_read", "Stream entries the relay's shared "
                                          "XREAD returned.", registry=registry)
        self.relay_entries_notified = Counter("tokenrelay_relay_entries_notified", "Stream entries the relay "
                                              "took from workers' notifications, without a read.", registry=registry)

    def relay_hooks(self) -> "RelayMetrics":
        return RelayMetrics(self)


class RelayMetrics(RelayHooks):
    """The relay's hooks, counting into the gateway's metrics."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self.metrics = metrics

    def on_read(self, entries: int) -> None:
        self.metrics.relay_reads.inc()
        if entries:
            self.metrics.relay_entries_read.inc(entries)

    def on_notified(self, entries: int) -> None:
        self.metrics.relay_entries_notified.inc(entries)

    def on_read_failed(self, error: Exception) -> None:
        if isinstance(error, RedisError):
            self.metrics.redis_errors.labels("relay").inc()

    def on_sent(self, events: int, tokens: int) -> None:
        if tokens:
            self.metrics.token_events.inc(tokens)

    def on_reader_dropped(self) -> None:
        self.metrics.slow_reader_disconnects.inc()


def count_redis_errors(app: FastAPI, metrics: GatewayMetrics) -> None:
    """Count the Redis failures the gateway answers with 503, keeping the existing handlers."""
    for kind in (RedisConnectionError, RedisTimeoutError):
        handler = app.exception_handlers.get(kind)
        if handler is None:
            continue

        async def counting(request: Request, exc: Exception, _handler=handler):
            metrics.redis_errors.labels("request").inc()
            return await _handler(request, exc)

        app.exception_handlers[kind] = counting


async def _refresh(request: Request, metrics: GatewayMetrics) -> None:
    state = request.app.state
    relay = state.relay
    metrics.active_streams.set(len(relay.hubs))
    metrics.active_readers.set(relay.reader_count)
    try:
        seconds, _ = await state.redis.time()
        alive_since_ms = (seconds - 3 * state.settings.lease_ttl_s) * 1000
        async with state.redis.pipeline(transaction=False) as pipe:
            pipe.zcount(state.keys.workers, alive_since_ms, "+inf")
            for bucket in state.keys.running_buckets:
                pipe.zcard(bucket)
            workers, *running_by_bucket = await pipe.execute()
    except RedisError as exc:
        metrics.redis_errors.labels("metrics").inc()
        log.warning("metrics: redis unavailable: %s", type(exc).__name__)
        return
    metrics.workers.set(workers)
    metrics.jobs.labels("running").set(sum(running_by_bucket))
    try:
        queued = await queue_depth(state, max_age_s=0)
    except Exception as exc:  # noqa: BLE001 - the broker is down: the other figures still go out
        log.warning("metrics: broker unavailable: %s", type(exc).__name__)
        queued = None
    if queued is not None:  # task messages waiting in the broker's queue (Redis list or AMQP queue)
        metrics.queue_depth.set(queued)
        metrics.jobs.labels("queued").set(queued)


@router.get("/metrics")
async def metrics_endpoint(request: Request) -> Response:
    # Cluster-wide figures (queue depth, running jobs, every key's traffic): for operators only.
    if not principal_of(request).admin:
        return error_response(403, "permission_error", "/metrics needs an admin key", param="Authorization")
    metrics: GatewayMetrics = request.app.state.metrics
    await _refresh(request, metrics)
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
