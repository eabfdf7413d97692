"""What the relay's tests share: their key prefix, a hooks recorder, a worker's write, an async wait."""

from __future__ import annotations

import asyncio
import inspect

from redis.asyncio import Redis

from api.relay import RelayHooks
from tokenrelay.core.keys import Keys
from tokenrelay.core.protocol import notification

KEYS = Keys("tokenrelay-relay-test")


class Recorder(RelayHooks):
    def __init__(self) -> None:
        self.read = self.reads = self.notified = self.sent_events = self.sent_tokens = self.dropped = 0
        self.failures: list[Exception] = []

    def on_notified(self, entries: int) -> None:
        self.notified += entries

    def on_read(self, entries: int) -> None:
        self.reads += 1
        self.read += entries

    def on_read_failed(self, error: Exception) -> None:
        self.failures.append(error)

    def on_sent(self, events: int, tokens: int) -> None:
        self.sent_events += events
        self.sent_tokens += tokens

    def on_reader_dropped(self) -> None:
        self.dropped += 1


async def append(redis: Redis, job_id: str, entry_id: str, fields: dict) -> None:
    """A write that notifies its last id only (as the final `end`, or a write too big to carry)."""
    await redis.xadd(KEYS.events(job_id), fields, id=entry_id)
    await redis.spublish(KEYS.live(job_id), entry_id)


async def append_notified(redis: Redis, job_id: str, entries: list[tuple[str, dict]]) -> None:
    """What a worker's write does: the entries, then a notification that carries them."""
    for entry_id, fields in entries:
        await redis.xadd(KEYS.events(job_id), fields, id=entry_id)
    await redis.spublish(KEYS.live(job_id), notification(entries))


async def until(condition, timeout_s: float = 10.0, message: str = "condition") -> None:
    """Wait for `condition()` (a value, or an awaitable of one: a Redis query) to hold, checking every few
    milliseconds; fail after `timeout_s`."""
    async def holds() -> bool:
        value = condition()
        return await value if inspect.isawaitable(value) else value

    try:
        async with asyncio.timeout(timeout_s):
            while not await holds():
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout_s}s waiting for {message}") from None
