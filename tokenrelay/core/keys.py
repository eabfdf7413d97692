"""Every Redis key name the product uses, built from validated parts.

All keys of one job share the hash tag `{<job id>}`, so they live in one Redis Cluster slot.
"""

from __future__ import annotations

import hashlib
import re

from .protocol import CANCEL_CHANNEL_SUFFIX, check_job_id

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
        self.running = f"{prefix}:running"  # zset: job id -> lease deadline (ms)
        self.workers = f"{prefix}:workers"  # zset: worker id -> last heartbeat (ms)
        self.recent = f"{prefix}:recent"  # zset: job id -> created (unix seconds)
        self.outbox = f"{prefix}:outbox"  # zset: job id -> when its record was written (ms), task not confirmed
        self.cancel_channel = f"{prefix}:{CANCEL_CHANNEL_SUFFIX}"

    def events(self, job_id: str) -> str:
        return f"{self.prefix}:{{{check_job_id(job_id)}}}:events"

    def meta(self, job_id: str) -> str:
        return f"{self.prefix}:{{{check_job_id(job_id)}}}:meta"

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
