"""Every Redis key name the product uses, built from validated parts.

All keys of one job share the hash tag `{<job id>}`, so they live in one Redis Cluster slot.
"""

from __future__ import annotations

from .protocol import CANCEL_CHANNEL_SUFFIX, check_job_id


class Keys:
    """Every Redis key name the product uses, built from validated parts."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.running = f"{prefix}:running"  # zset: job id -> lease deadline (ms)
        self.workers = f"{prefix}:workers"  # zset: worker id -> last heartbeat (ms)
        self.recent = f"{prefix}:recent"  # zset: job id -> created (unix seconds)
        self.cancel_channel = f"{prefix}:{CANCEL_CHANNEL_SUFFIX}"

    def events(self, job_id: str) -> str:
        return f"{self.prefix}:{{{check_job_id(job_id)}}}:events"

    def meta(self, job_id: str) -> str:
        return f"{self.prefix}:{{{check_job_id(job_id)}}}:meta"

    def live(self, job_id: str) -> str:
        """The job's notification channel (sharded pub/sub, in the job's slot): "its stream grew"."""
        return f"{self.prefix}:{{{check_job_id(job_id)}}}:live"
