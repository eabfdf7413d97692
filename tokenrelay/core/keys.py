"""Every Redis key name the product uses, built from validated parts.

Each script and transaction touches one Redis Cluster slot, and the same layout runs on one server:
- a job's keys (record, stream, lease, notification channel) share the hash tag `{<job id>}`;
- the indexes of running, settling (just ended) and recent jobs are split into `INDEX_BUCKETS` buckets (`<prefix>:running:07`),
  keys of their own, so of their own slots, spread over a cluster's masters; a job belongs to one bucket
  of each, chosen from its id, and the reapers and the job list walk all buckets;
- the worker heartbeats are one key, written one command at a time.
Keys that are only ever used alone need no hash tag: a cluster puts each in the slot of its name.
"""

from __future__ import annotations

import hashlib
import re

from .protocol import CANCEL_CHANNEL_SUFFIX, check_job_id

# Spread over the masters of a cluster; walking them all is one pipelined round of 16 commands.
INDEX_BUCKETS = 16


def bucket_of(job_id: str) -> int:
    return int(check_job_id(job_id)[:8], 16) % INDEX_BUCKETS


WORKER_ID = re.compile(r"[A-Za-z0-9_.@:-]{1,200}")  # <hostname>:<pid>
OWNER_NAME = re.compile(r"[A-Za-z0-9_.-]{0,64}")  # API key names ("" = jobs made without keys)


def check_owner(owner: str) -> str:
    if not OWNER_NAME.fullmatch(owner):
        raise ValueError("invalid owner name")
    return owner


# Chat ids come from clients (the AI SDK makes them).
CHAT_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,128}")


class Keys:
    """Every Redis key name the product uses, built from validated parts."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.workers = f"{prefix}:workers"  # zset: worker id -> last heartbeat (ms)
        self.cancel_channel = f"{prefix}:{CANCEL_CHANNEL_SUFFIX}"  # pub/sub: job ids to cancel
        self.outbox = f"{prefix}:outbox"  # zset: job id -> when its record was written (ms), task not confirmed
        self.running_buckets = [self._bucket("running", n) for n in range(INDEX_BUCKETS)]
        self.recent_buckets = [self._bucket("recent", n) for n in range(INDEX_BUCKETS)]
        self.settling_buckets = [self._bucket("settling", n) for n in range(INDEX_BUCKETS)]

    def _bucket(self, index: str, number: int) -> str:
        return f"{self.prefix}:{index}:{number:02d}"

    def running(self, job_id: str) -> str:
        """The bucket of running jobs that holds `job_id` (zset: job id -> when to check its lease, ms)."""
        return self.running_buckets[bucket_of(job_id)]

    def settling(self, job_id: str) -> str:
        """The bucket of jobs whose end was just written, that holds `job_id` (zset: job id -> when to check
        that the end is still there, ms): a failover may lose an end the old primary acknowledged."""
        return self.settling_buckets[bucket_of(job_id)]

    def recent(self, job_id: str) -> str:
        """The bucket of recent jobs that holds `job_id` (zset: job id -> created, unix seconds)."""
        return self.recent_buckets[bucket_of(job_id)]

    def events(self, job_id: str) -> str:
        return f"{self.prefix}:{{{check_job_id(job_id)}}}:events"

    def meta(self, job_id: str) -> str:
        return f"{self.prefix}:{{{check_job_id(job_id)}}}:meta"

    def lease(self, job_id: str) -> str:
        """The running attempt's lease: its attempt number, expiring unless its worker renews it."""
        return f"{self.prefix}:{{{check_job_id(job_id)}}}:lease"

    def live(self, job_id: str) -> str:
        """The job's notification channel (sharded pub/sub, in the job's slot): "its stream grew"."""
        return f"{self.prefix}:{{{check_job_id(job_id)}}}:live"

    def worker_alive(self, worker_id: str) -> str:
        """string with a TTL of one lease: the worker process renewed its leases within that time."""
        if not WORKER_ID.fullmatch(worker_id):
            raise ValueError("invalid worker id")
        return f"{self.prefix}:{{worker:{worker_id}}}:alive"

    # One key (one Cluster slot) per owner for each of these: nothing here spans owners.
    def owner_jobs(self, owner: str) -> str:
        """zset: one owner's job ids -> created (unix seconds); `recent` holds every owner's."""
        return f"{self.prefix}:{{owner:{check_owner(owner)}}}:jobs"

    def idempotency(self, owner: str, idempotency_key: str) -> str:
        """string: `<job id> <request digest>` for an Idempotency-Key of one owner. The client's key
        is hashed: any bytes it sends stay out of key names."""
        digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]
        return f"{self.prefix}:{{owner:{check_owner(owner)}}}:idem:{digest}"

    def chat(self, owner: str, chat_id: str) -> str:
        """hash: an AI SDK chat's latest job (`job`). Per owner: another key's chat of the same id is another chat."""
        if not CHAT_ID_PATTERN.fullmatch(chat_id):
            raise ValueError("invalid chat id")
        return f"{self.prefix}:{{owner:{check_owner(owner)}}}:chat:{chat_id}"
