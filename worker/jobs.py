"""One attempt of one job on a worker: take the lease, run the core, publish, finish the record.

The job stays in `running` (its lease renewed, its own worker's reaper keeping off it) until its
`end` is written: the final flush and finish can wait seconds on a busy worker, and a lease that
ran out there made a finished job run again (issue #11).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from redis.asyncio import Redis

from tokenrelay import events
from tokenrelay.core import protocol
from tokenrelay.core.keys import Keys
from tokenrelay.core.settings import Settings
from tokenrelay.core.status import FinishOutcome, JobStatus, StartOutcome
from tokenrelay.core.store import JobRecord, JobScripts, utc_now
from tokenrelay.engine import graphs, runner, tools
from tokenrelay.engine.models import ChatModels, GenerationParams
from tokenrelay.engine.retry import RetryPolicy, with_retries

from .metrics import worker_metrics
from .publisher import JobStream, StreamPublisher

log = logging.getLogger("tokenrelay.worker")


@dataclass
class RunningJob:
    job_id: str
    attempt: int
    task: asyncio.Task
    stop_reason: str | None = None  # "cancelled" (a client asked), "superseded", "write_failed"
    finishing: bool = False  # generation is over: the flush and finish must not be cancelled

    def stop(self, reason: str) -> None:
        if self.stop_reason is None and not self.finishing:
            self.stop_reason = reason
            self.task.cancel()


@dataclass
class JobServices:
    """What an attempt needs from its worker process."""

    settings: Settings
    redis: Redis
    keys: Keys
    scripts: JobScripts
    publisher: StreamPublisher
    worker_id: str = ""
    running: dict[str, RunningJob] = field(default_factory=dict)
    models: ChatModels = field(init=False)  # built models, shared by the jobs that ask for the same ones

    def __post_init__(self) -> None:
        self.models = ChatModels(self.settings)

    @property
    def lease_ms(self) -> int:
        return int(self.settings.lease_ttl_s * 1000)

    @property
    def running_ttl_s(self) -> int:
        return int(self.settings.job_timeout_s + self.settings.retention_s)


async def execute_job(services: JobServices, job_id: str) -> str:
    """Run one attempt of `job_id`; returns what happened (a terminal status, or why nothing ran)."""
    (state, attempt), record = await services.scripts.begin(
        job_id, services.worker_id, int(time.time() * 1000) + services.lease_ms, services.lease_ms,
        services.running_ttl_s)
    if not state.runs:
        log.info("job %s not run: %s", job_id, state)
        if state in (StartOutcome.MISSING, StartOutcome.FINISHED):
            await services.scripts.untrack(job_id)
        return state
    job = RunningJob(job_id, attempt, asyncio.current_task())
    services.running[job_id] = job
    try:
        return await _attempt(services, job, record, state)
    finally:
        services.running.pop(job_id, None)


async def _attempt(services: JobServices, job: RunningJob, record: JobRecord, state: StartOutcome) -> str:
    job_id, attempt = job.job_id, job.attempt
    stream = services.publisher.open(job_id, attempt, job.stop)
    if attempt > 1:
        stream.emit(events.reset(attempt, "worker_lost"))
    stream.emit(events.metadata(job_id, attempt, record.model, record.request.get("graph")))
    log.info("job %s attempt %d started", job_id, attempt)
    outcome = runner.Outcome()
    status, error = JobStatus.SUCCEEDED, None
    try:
        if state == StartOutcome.CANCEL:  # cancelled while it waited in the queue
            job.stop_reason = "cancelled"
            raise asyncio.CancelledError
        async with asyncio.timeout(services.settings.job_timeout_s):
            await _generate(services, record, stream, outcome)
    except asyncio.CancelledError:
        if job.stop_reason is None:  # the worker itself is shutting down: the lease runs out
            raise
        asyncio.current_task().uncancel()
        if job.stop_reason == "superseded":
            log.warning("job %s attempt %d superseded by a newer attempt", job_id, attempt)
            return FinishOutcome.SUPERSEDED
        status = JobStatus.CANCELLED if job.stop_reason == "cancelled" else JobStatus.FAILED
        if status == JobStatus.FAILED:
            error = events.error(job.stop_reason if job.stop_reason in ("store_full", "store_lost")
                                 else "internal_error")
    except Exception as exc:  # noqa: BLE001 - every failure ends the job; the text stays in the log
        log.exception("job %s attempt %d failed", job_id, attempt)
        error = runner.error_event(exc)
        status = JobStatus.FAILED
    job.finishing = True
    if error:
        stream.emit(error)
    await stream.flushed()
    return await _finish(services, stream, record.model, status, outcome, error)


async def _generate(services: JobServices, record, stream: JobStream, outcome: runner.Outcome) -> None:
    settings = services.settings
    params = GenerationParams.from_dict(record.request.get("params", {}), settings.default_max_tokens)
    model = services.models.get(record.model, params)
    graph_name = record.request.get("graph")
    if graph_name:
        graph = graphs.load_graph(graph_name, settings, model)

        def run():
            return graphs.stream_graph(graph, record.request.get("input") or {},
                                       record.request.get("stream_mode") or list(graphs.DEFAULT_STREAM_MODES), outcome)
    else:
        messages = tools.to_langchain_messages(record.request["messages"])
        bound = tools.bind_request(model, record.request)

        def run():
            return runner.stream_chat(bound, messages, outcome)

    policy = RetryPolicy(settings.provider_attempts, tuple(settings.provider_retry_delays_s))
    metrics = worker_metrics()
    async for event in with_retries(run, outcome, policy, stream.attempt):
        if outcome.tokens == 0 and event.event == events.TOKEN:
            metrics.first_token(record.created_at)
        stream.emit(event)
    metrics.tokens.inc(outcome.tokens)


async def _finish(
    services: JobServices, stream: JobStream, model: str, status: JobStatus, outcome: runner.Outcome,
    error: events.Event | None,
) -> str:
    end = events.end(status, outcome.final_usage, outcome.finish_reason)
    fields = {
        "status": status,
        "finished_at": utc_now(),
        "output_text": outcome.text,
        "usage": protocol.dumps(end.data["usage"]),
        "finish_reason": end.data["finish_reason"] or "",
    }
    if outcome.state is not None:
        fields["output_state"] = protocol.dumps(outcome.state)
    if outcome.tool_calls:
        fields["output_tool_calls"] = protocol.dumps(outcome.tool_calls)
    if error:
        fields["error"] = protocol.dumps(error.data)
    # A stream that lost its writes could not carry the error event: the finish writes it.
    error_entry = (stream.reserve_id(), protocol.dumps(error.data)) if error and stream.lost_reason else None
    written = await services.scripts.finish(
        stream.job_id,
        stream.attempt,
        stream.reserve_id(),
        protocol.dumps(end.data),
        services.settings.retention_s,
        fields,
        error_entry,
    )
    if written == FinishOutcome.SUPERSEDED:
        log.warning("job %s attempt %d superseded before it finished", stream.job_id, stream.attempt)
        return written
    # Looked at once more a lease from now: a failover of the job's primary may yet lose this end.
    await services.scripts.settle(stream.job_id, int(time.time() * 1000) + services.lease_ms)
    log.info("job %s attempt %d %s (%d tokens)", stream.job_id, stream.attempt, status, outcome.tokens)
    return status
