"""Every Redis key name the product uses, built from validated parts.

All keys of one job share the hash tag `{<job id>}`, so they live in one Redis Cluster slot.
"""

from __future__ import annotations

import re

from .protocol import CANCEL_CHANNEL_SUFFIX, check_job_id

# Chat ids come from clients (the AI SDK makes them); owners are API key names or "anonymous".
CHAT_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,128}")
OWNER_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")


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

    def chat(self, owner: str, chat_id: str) -> str:
        """A chat's latest job, per owner: another key's chat of the same id is another chat."""
        if not OWNER_PATTERN.fullmatch(owner) or not CHAT_ID_PATTERN.fullmatch(chat_id):
            raise ValueError("invalid owner or chat id")
        return f"{self.prefix}:chat:{owner}:{chat_id}"
