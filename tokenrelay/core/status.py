"""Job statuses and what the store's scripts answer, as `str` enums.

Their values are the exact strings stored in Redis, sent in JSON and returned by the Lua scripts.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


class StartOutcome(StrEnum):
    """What `start.lua` did with a job a worker picked up."""

    STARTED = "started"  # this attempt owns the job now
    CANCEL = "cancel"  # this attempt owns it, but a cancel came while it was queued
    MISSING = "missing"
    FINISHED = "finished"  # already terminal: nothing to run
    BUSY = "busy"  # another attempt holds a live lease

    @property
    def runs(self) -> bool:
        return self in (StartOutcome.STARTED, StartOutcome.CANCEL)


class CancelOutcome(StrEnum):
    """What `cancel.lua` did."""

    MISSING = "missing"
    FINISHED = "finished"  # already terminal: nothing to do
    CANCELLED = "cancelled"  # it was queued: ended on the spot
    CANCELLING = "cancelling"  # it is running: its worker stops it


class ClaimOutcome(StrEnum):
    """What `claim_lost.lua` did with a job found in the running index past its check time."""

    CLAIMED = "claimed"  # its lease ran out while it ran: this caller must enqueue it again
    ALIVE = "alive"  # an attempt holds its lease
    IDLE = "idle"  # not running (finished, queued or gone): nothing to do


class FinishOutcome(StrEnum):
    """What `finish.lua` did with an attempt's end."""

    WRITTEN = "written"
    ALREADY_FINISHED = "already_finished"
    SUPERSEDED = "superseded"  # another attempt owns the job


class SubmitOutcome(StrEnum):
    """What `submit.lua` did (nothing is written unless ADMITTED)."""

    ADMITTED = "admitted"  # record, indexes, quota slot, Idempotency-Key and task written
    HELD = "held"  # the Idempotency-Key names an earlier job
    QUEUE_FULL = "queue_full"  # max_queued_jobs
    ACTIVE_FULL = "active_full"  # max_active_jobs_per_key, counting jobs that may have finished since
    RATE_LIMITED = "rate_limited"  # rate_limit_per_minute: the request was counted, nothing else written


class Started(NamedTuple):
    outcome: StartOutcome
    attempt: int  # 0 unless the attempt runs


class Cancelled(NamedTuple):
    outcome: CancelOutcome
    status: JobStatus | None  # the job's status after the call; None when it is missing
