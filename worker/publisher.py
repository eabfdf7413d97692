"""One batched writer per worker process: every running job hands it events, it writes them to Redis.

Deliberate choices (read before changing):
- A write starts as soon as the previous one returned; nothing waits for company unless
  `flush_window_ms` asks for it. Tokens that arrive while a write is in flight are merged into
  one `token` event per job (text concatenated, `count` says how many) and written together,
  all jobs in one pipeline: batching happens exactly when tokens come faster than Redis answers.
- Each job's writes in a batch end with an `SPUBLISH` on the job's channel (same slot) carrying the
  entries just written (`protocol.notification`): the gateways that follow the job relay them from
  there, or read the stream when they cannot (api/relay.py). A lost notification costs only time.
- Ids are assigned when a batch is built, `<attempt>-<seq>`, and kept across retries, so a
  retried write fails with "equal or smaller" instead of duplicating. Such a failure is checked
  against the stream's top entry: a higher attempt there means this attempt was superseded.
- Each write of a job also reads where its stream ended just before (same pipeline, same slot).
  Behind the last entry Redis acknowledged to this attempt means a failover lost writes the old
  primary had acknowledged: the job fails with `store_lost` (`error` + `end`), so no reader is
  left with a hole it cannot see. A read-only command, not a script: a script per write costs
  Redis about 1.5x the CPU per token (measured with `python -m bench --only 9`).
- The publisher's Redis client has no per-reply socket timeout; one deadline covers a whole write.
  redis-py arms a timer for every reply it reads, which cost a third of a 1,500-command write's CPU.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ClusterDownError, OutOfMemoryError, ResponseError, TryAgainError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tokenrelay.core import protocol
from tokenrelay.core.keys import Keys
from tokenrelay.core.protocol import EventId
from tokenrelay.events import TOKEN, Event

log = logging.getLogger("tokenrelay.worker.publisher")

RETRY_DELAYS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0)
# Results that mean "Redis did not answer" rather than "Redis refused": the write is tried again (its
# explicit ids make that safe).
UNREACHABLE = (RedisConnectionError, RedisTimeoutError, ClusterDownError, TryAgainError)
MERGE_KEYS_IGNORED = ("text", "index", "count", "ts")
# A write (one pipeline) Redis has not answered in this long is given up and tried again.
WRITE_TIMEOUT_S = 10.0


def _mergeable(pending: Event, new: Event) -> bool:
    if pending.event != TOKEN or new.event != TOKEN:
        return False
    return all(pending.data.get(k) == new.data.get(k) for k in new.data if k not in MERGE_KEYS_IGNORED) and all(
        k in new.data for k in pending.data if k not in MERGE_KEYS_IGNORED
    )


def _merge(pending: Event, new: Event) -> Event:
    data = dict(pending.data)
    data["text"] = pending.data["text"] + new.data["text"]
    data["count"] = pending.data.get("count", 1) + new.data.get("count", 1)
    return Event(pending.event, data)


def _lost_entries(end: Any, acked: EventId | None) -> bool:
    """True if the stream (its last entry before this write: `end`) no longer holds what this attempt
    wrote up to `acked`: a failover lost writes the old primary had acknowledged."""
    if acked is None or isinstance(end, Exception):
        return False  # nothing written yet; or the check itself failed (the write's own result decides)
    if not end:
        return True
    raw = end[0][0]
    return EventId.parse(raw.decode() if isinstance(raw, bytes) else raw) < acked


def _failure_reason(failures: list[Exception]) -> str:
    # Redis at maxmemory with noeviction refuses writes: say so, rather than a generic failure.
    return "store_full" if any(isinstance(f, OutOfMemoryError) for f in failures) else "write_failed"


class JobStream:
    """One attempt's view of the publisher: events go in, ids come out in order."""

    def __init__(self, publisher: "StreamPublisher", job_id: str, attempt: int, on_lost: Callable[[str], None]):
        self.publisher = publisher
        self.job_id = job_id
        self.key = publisher.keys.events(job_id)
        self.channel = publisher.keys.live(job_id)
        self.attempt = attempt
        self.next_seq = 0
        self.pending: list[Event] = []
        self.in_flight = 0
        self.lost_reason: str | None = None
        self.acked: EventId | None = None  # the last entry of this attempt that Redis acknowledged
        self.on_lost = on_lost
        self.first_write = True
        self._idle = asyncio.Event()
        self._idle.set()

    def emit(self, event: Event) -> None:
        if self.lost_reason:
            return
        if self.publisher.event_timestamps and event.event == TOKEN:
            # Production time of the (first) token, for measuring delivery lag end to end.
            event = Event(event.event, {**event.data, "ts": time.time()})
        if self.pending and _mergeable(self.pending[-1], event):
            self.pending[-1] = _merge(self.pending[-1], event)
        else:
            self.pending.append(event)
        self._idle.clear()
        self.publisher.schedule(self)

    def reserve_id(self) -> str:
        """The id of the next entry, for a write the caller makes itself (the final `end`)."""
        event_id = str(EventId(self.attempt, self.next_seq))
        self.next_seq += 1
        return event_id

    def take(self) -> list[tuple[str, Event]]:
        batch = [(self.reserve_id(), event) for event in self.pending]
        self.pending = []
        self.in_flight += 1
        return batch

    def done_writing(self) -> None:
        self.in_flight -= 1
        if not self.pending and not self.in_flight:
            self._idle.set()

    def lose(self, reason: str) -> None:
        """Stop writing: another attempt owns the stream (`superseded`) or Redis refused (`write_failed`)."""
        self.lost_reason = reason
        self.pending = []
        self.done_writing()
        self.on_lost(reason)

    async def flushed(self) -> None:
        """Wait until every event emitted so far is in Redis."""
        await self._idle.wait()


class StreamPublisher:
    def __init__(self, redis: Redis, keys: Keys, *, running_ttl_s: int, flush_window_ms: float = 0.0,
                 event_timestamps: bool = False, write_retry_s: float = 0.0,
                 write_timeout_s: float = WRITE_TIMEOUT_S) -> None:
        """`redis`: best a client without a socket timeout (`write_timeout_s` bounds each write)."""
        self.redis = redis
        self.write_timeout_s = write_timeout_s
        self.event_timestamps = event_timestamps
        self.keys = keys
        self.running_ttl_s = running_ttl_s
        self.flush_window_s = flush_window_ms / 1000.0
        self.write_retry_s = write_retry_s
        self._ready: dict[str, JobStream] = {}
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.writes = 0
        self.entries = 0

    def open(self, job_id: str, attempt: int, on_lost: Callable[[str], None]) -> JobStream:
        return JobStream(self, job_id, attempt, on_lost)

    def schedule(self, stream: JobStream) -> None:
        self._ready[stream.key] = stream
        self._wakeup.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="tokenrelay-publisher")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            # Let every coroutine that is ready now add its tokens before the batch is cut.
            await asyncio.sleep(self.flush_window_s)
            self._wakeup.clear()
            streams, self._ready = list(self._ready.values()), {}
            batches = [(stream, stream.take()) for stream in streams if stream.pending]
            if batches:
                await self._write(batches)

    def _retry_delays(self):
        """Waits between tries of a write Redis did not answer: quick at first, then every few seconds
        until `write_retry_s` has passed (a failover takes seconds)."""
        waited = 0.0
        for delay in itertools.chain((0.0,), RETRY_DELAYS_S, itertools.repeat(RETRY_DELAYS_S[-1])):
            if waited + delay > max(self.write_retry_s, sum(RETRY_DELAYS_S)):
                return
            waited += delay
            yield delay

    async def _write(self, batches: list[tuple[JobStream, list[tuple[str, Event]]]]) -> None:
        attempt_number = 0
        for attempt_number, delay in enumerate(self._retry_delays(), start=1):
            if delay:
                await asyncio.sleep(delay)
            try:
                results = await self._pipeline(batches)
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                log.warning("stream write failed (try %d): %s", attempt_number, exc)
                continue
            except Exception:  # noqa: BLE001 - a write that cannot succeed must not stop the publisher
                if len(batches) > 1:  # find the job whose events cannot be written; the others go on
                    for batch in batches:
                        await self._write([batch])
                    return
                log.exception("stream write for job %s refused", batches[0][0].job_id)
                batches[0][0].lose("write_failed")
                return
            unreachable = next((r for r in results if isinstance(r, UNREACHABLE)), None)
            if unreachable is not None:  # a cluster pipeline reports a node it could not reach per command
                log.warning("stream write failed (try %d): %s", attempt_number, unreachable)
                continue
            await self._settle(batches, results)
            return
        log.error("stream write failed after %d tries; failing %d job(s)", attempt_number, len(batches))
        for stream, _ in batches:
            stream.lose("write_failed")

    async def _pipeline(self, batches: list[tuple[JobStream, list[tuple[str, Event]]]]) -> list[Any]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream, entries in batches:
                if stream.acked is not None:  # where the stream ends now, to check no entry of ours was lost
                    pipe.xrevrange(stream.key, count=1)
                encoded = [(event_id, protocol.encode_fields(event.event, event.data)) for event_id, event in entries]
                for event_id, fields in encoded:
                    pipe.xadd(stream.key, fields, id=event_id)
                if stream.first_write:
                    pipe.expire(stream.key, self.running_ttl_s)
                pipe.spublish(stream.channel, protocol.notification(encoded))  # see api/relay.py
            async with asyncio.timeout(self.write_timeout_s):
                results = await pipe.execute(raise_on_error=False)
        self.writes += 1
        self.entries += sum(len(entries) for _, entries in batches)
        return results

    async def _settle(self, batches: list[tuple[JobStream, list[tuple[str, Event]]]], results: list[Any]) -> None:
        position = 0
        for stream, entries in batches:
            end = None
            if stream.acked is not None:
                end, position = results[position], position + 1
            failures = [r for r in results[position : position + len(entries)] if isinstance(r, Exception)]
            position += len(entries) + (1 if stream.first_write else 0) + 1  # + the notification
            stream.first_write = False
            if failures and not await self._written_by_us(stream, failures):
                stream.lose("superseded" if self._is_fenced(failures) else _failure_reason(failures))
            elif _lost_entries(end, stream.acked):
                log.error("job %s attempt %d: the stream lost entries Redis had acknowledged (up to %s): failing "
                          "the job", stream.job_id, stream.attempt, stream.acked)
                stream.lose("store_lost")
            else:
                stream.acked = EventId.parse(entries[-1][0])
                stream.done_writing()

    @staticmethod
    def _is_fenced(failures: list[Exception]) -> bool:
        return all(isinstance(f, ResponseError) and "equal or smaller" in str(f) for f in failures)

    async def _written_by_us(self, stream: JobStream, failures: list[Exception]) -> bool:
        """After a failed XADD: True if it was a retry of our own write, False if we lost the stream."""
        if not self._is_fenced(failures):
            log.error("stream write for job %s failed: %s", stream.job_id, type(failures[0]).__name__)
            return False
        async with asyncio.timeout(self.write_timeout_s):
            top = await self.redis.xrevrange(stream.key, count=1)
        if not top:
            return False
        top_id = EventId.parse(top[0][0].decode() if isinstance(top[0][0], bytes) else top[0][0])
        return top_id.attempt <= stream.attempt
