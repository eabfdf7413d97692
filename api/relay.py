"""The gateway's relay: each job's stream is read once per process and fanned out to its readers.

Deliberate choices (read before changing):
- Workers `SPUBLISH` a notification on the job's channel (in the job's slot) after each write; the
  gateway `SSUBSCRIBE`s to the channels of the jobs it follows (tokenrelay/core/shardsub.py) and, for
  each notified job, reads what is new with one `XRANGE` from the position it last relayed. The
  stream stays the only history. Redis work per token is one notification and one range read per
  gateway: it does not grow with the number of live jobs a gateway follows (one shared XREAD that
  names every followed stream did, and cannot span slots of a cluster).
- One pump task reads every notified job, all of them in one pipeline per round: a job is never read
  twice at once, so events reach readers in order. Notifications that arrive while a round is in
  flight coalesce into the next round.
- Subscribe, then read: a subscription's confirmation makes the pump read the job from its position,
  so whatever landed before the subscription took effect is read, and nothing starts at `$`.
- A reader replays history first, then joins the job's hub at the hub's current position and reads
  the gap up to it; live events it already has are dropped by id.
- Each entry becomes SSE bytes once, in the hub, and the same bytes go to every reader. Readers with a
  filter (api/filters.py) also get a view of the entry's type and data, built once per entry and only
  when such a reader is there; a filtered-out event costs a reader nothing.
- Each reader has a bounded queue. A reader that falls `client_buffer_events` behind is cut off (its
  response ends without `end`) and resumes with Last-Event-ID: memory stays bounded, nothing is
  dropped silently.
- After Redis failed (a read, or a subscription's connection), the pump checks that each followed job
  still has its record. A Redis that came back empty has none: the job can never write its `end`, so
  its readers get a final `error` (job_lost) and `end` from the gateway instead of waiting forever.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from collections.abc import AsyncIterator

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tokenrelay import events
from tokenrelay.core import protocol
from tokenrelay.core.connections import RedisTarget, subscriber_connector
from tokenrelay.core.keys import Keys
from tokenrelay.core.protocol import EventId
from tokenrelay.core.shardsub import ShardSubscriber
from tokenrelay.core.status import JobStatus

from .filters import EntryView, StreamFilter

log = logging.getLogger("tokenrelay.gateway.relay")

END_EVENT = b"end"
HISTORY_RETRY_DELAYS_S = (0.1, 0.5, 1.0)
LOST_ERROR = protocol.dumps(events.error("job_lost").data).encode()
LOST_END = protocol.dumps(events.end(JobStatus.FAILED).data).encode()


def _entry_id(raw: bytes) -> EventId:
    attempt, seq = raw.split(b"-")
    return EventId(int(attempt), int(seq))


def _job_id(events_key: bytes) -> str:
    return events_key.decode().rsplit("{", 1)[1].split("}", 1)[0]


class Reader:
    """One client's bounded queue of SSE frames."""

    __slots__ = ("frames", "limit", "overflowed", "wake", "filter")

    def __init__(self, limit: int, stream_filter: StreamFilter | None = None) -> None:
        self.frames: deque[tuple[EventId, bytes, bool]] = deque()
        self.limit = limit
        self.filter = stream_filter
        self.overflowed = False
        self.wake = asyncio.Event()

    def push(self, event_id: EventId, frame: bytes, is_end: bool) -> None:
        if self.overflowed:
            return
        if len(self.frames) >= self.limit:
            self.overflowed = True
        else:
            self.frames.append((event_id, frame, is_end))
        self.wake.set()


class Hub:
    """Everything this process relays for one job."""

    __slots__ = ("key", "readers", "filtered", "position", "live", "done")

    def __init__(self, key: bytes) -> None:
        self.key = key
        self.readers: set[Reader] = set()
        self.filtered = 0  # readers with a filter
        self.position: EventId | None = None  # last entry the shared loop has read
        self.live = False
        self.done = False

    def lost_entries(self) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """An `error` and an `end` right after what was relayed, for a job whose data is gone."""
        at = self.position or EventId(0, 0)
        return [(f"{at.attempt}-{at.seq + 1}".encode(), {b"e": b"error", b"d": LOST_ERROR}),
                (f"{at.attempt}-{at.seq + 2}".encode(), {b"e": END_EVENT, b"d": LOST_END})]

    def deliver(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        for raw_id, fields in entries:
            event_id = _entry_id(raw_id)
            frame = protocol.entry_to_sse(raw_id, fields)
            is_end = fields.get(b"e") == END_EVENT
            self.position = event_id
            view = EntryView(fields[b"e"], fields[b"d"]) if self.filtered else None
            for reader in self.readers:
                if reader.filter is None or reader.filter.accepts(view):
                    reader.push(event_id, frame, is_end)
            if is_end:
                self.done = True
                break


class Relay:
    def __init__(self, redis: Redis | RedisCluster, target: RedisTarget, keys: Keys, *, history_batch: int,
                 client_buffer_events: int, keepalive_s: float) -> None:
        self.redis = redis
        self.keys = keys
        self.history_batch = history_batch
        self.client_buffer_events = client_buffer_events
        self.keepalive_s = keepalive_s
        self.hubs: dict[bytes, Hub] = {}
        self._channels: dict[bytes, bytes] = {}  # notification channel -> events key
        connect = subscriber_connector(target, client_name=f"tokenrelay-gateway-sub:{os.getpid()}")
        self.subscriber = ShardSubscriber(redis, connect, on_message=self._notified, on_ready=self._notified,
                                          on_lost=self._lost)
        self._dirty: dict[bytes, None] = {}  # events keys to read, in arrival order
        self._pending = asyncio.Event()
        self._check_records = False
        self._task: asyncio.Task | None = None
        self.reads = 0

    @property
    def reader_count(self) -> int:
        return sum(len(hub.readers) for hub in self.hubs.values())

    async def start(self) -> None:
        self._task = asyncio.create_task(self._pump_forever(), name="tokenrelay-relay")

    async def stop(self) -> None:
        await self.subscriber.close()
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    # -- notifications ---------------------------------------------------------------------------------

    def _notified(self, channel: bytes) -> None:
        key = self._channels.get(channel)
        if key is not None:
            self._mark(key)

    def _lost(self, channels: set[bytes]) -> None:
        # Re-subscribing reads every job again; meanwhile, check that the jobs still exist.
        self._check_records = True
        self._pending.set()

    def _mark(self, key: bytes) -> None:
        self._dirty[key] = None
        self._pending.set()

    # -- the pump ----------------------------------------------------------------------------------------

    async def _pump_forever(self) -> None:
        while True:
            await self._pending.wait()
            self._pending.clear()
            if self._check_records:
                self._check_records = not await self._end_lost_jobs()
                if self._check_records:  # Redis cannot tell yet: look again shortly
                    for key in self.hubs:
                        self._mark(key)
                    await asyncio.sleep(0.5)
                    continue
            hubs = [hub for key in self._dirty if (hub := self.hubs.get(key)) and hub.live and not hub.done]
            self._dirty.clear()
            if not hubs:
                continue
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for hub in hubs:
                        pipe.xrange(hub.key, "-" if hub.position is None else f"({hub.position}", "+",
                                    count=self.history_batch)
                    results = await pipe.execute()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep relaying once Redis is back
                log.warning("relay read failed: %s", exc)
                self._on_read_error()
                self._check_records = True
                for hub in hubs:
                    self._mark(hub.key)
                await asyncio.sleep(0.5)
                continue
            self.reads += 1
            for hub, entries in zip(hubs, results):
                if entries and hub.live and not hub.done:
                    hub.deliver(entries)
                    if len(entries) >= self.history_batch and not hub.done:
                        self._mark(hub.key)

    def _on_read_error(self) -> None:
        """A hook for metrics."""

    async def _end_lost_jobs(self) -> bool:
        """End the hubs of jobs whose record is gone; False if Redis cannot tell yet."""
        hubs = [hub for hub in self.hubs.values() if hub.live and not hub.done]
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for hub in hubs:
                    pipe.exists(self.keys.meta(_job_id(hub.key)))
                found = await pipe.execute() if hubs else []
        except Exception:  # noqa: BLE001 - still unreachable: check again after the next failure
            return False
        for hub, exists in zip(hubs, found):
            if not exists:
                log.warning("job %s lost its record (Redis restarted empty?); ending its streams", _job_id(hub.key))
                hub.deliver(hub.lost_entries())
        return True

    async def _start_hub(self, hub: Hub) -> None:
        channel = self.keys.live(_job_id(hub.key)).encode()
        self._channels[channel] = hub.key
        if await self.subscriber.subscribe(channel):
            self._mark(hub.key)  # still subscribed from before: no confirmation will come

    def _end_hub(self, hub: Hub) -> None:
        channel = self.keys.live(_job_id(hub.key)).encode()
        self._channels.pop(channel, None)
        self.subscriber.release(channel)

    # -- one client ------------------------------------------------------------------------------------

    async def follow(self, job_id: str, after: EventId | None, stream_filter: StreamFilter | None = None, *,
                     fresh: bool = False) -> AsyncIterator[bytes]:
        """SSE frames of a job after `after` (from the start if None), ending after `end`.

        `fresh`: the job was just created here and has no events yet, so there is no history to read.
        Ends early, without `end`, if the client falls too far behind; it then resumes by id.
        With a filter, only the events it accepts are sent; `last` still tracks every entry read.
        """
        key = self.keys.events(job_id).encode()
        last = after
        # 1. History, straight from Redis.
        if not fresh:
            async for frames, last, ended in self._history(key, last, None, stream_filter):
                if frames:  # a filter may leave a batch empty; `last` still moves past it
                    yield frames
                if ended:
                    return
        # 2. Join the hub; read the gap between our history and the hub's position.
        reader = Reader(self.client_buffer_events, stream_filter)
        hub = self.hubs.get(key)
        if hub is None:
            hub = self.hubs[key] = Hub(key)
        hub.readers.add(reader)
        hub.filtered += stream_filter is not None
        try:
            if not hub.live:
                hub.live, hub.position = True, last
                await self._start_hub(hub)
            elif hub.position is not None and (last is None or hub.position > last):
                async for frames, last, ended in self._history(key, last, hub.position, stream_filter):
                    if frames:
                        yield frames
                    if ended:
                        return
            # 3. Live.
            async for frames in self._live(reader, last):
                yield frames
        finally:
            hub.readers.discard(reader)
            hub.filtered -= stream_filter is not None
            if not hub.readers and self.hubs.get(key) is hub:
                del self.hubs[key]
                if hub.live:
                    self._end_hub(hub)

    async def _history(self, key: bytes, after: EventId | None, until: EventId | None,
                       stream_filter: StreamFilter | None = None):
        start = "-" if after is None else f"({after}"
        end = "+" if until is None else str(until)
        while True:
            entries = await self._xrange(key, start, end)
            if not entries:
                return
            frames, last, ended = [], after, False
            for raw_id, fields in entries:
                if stream_filter is None or stream_filter.accepts(EntryView(fields[b"e"], fields[b"d"])):
                    frames.append(protocol.entry_to_sse(raw_id, fields))
                last = _entry_id(raw_id)
                if fields.get(b"e") == END_EVENT:
                    ended = True
                    break
            after = last
            yield b"".join(frames), last, ended
            if ended or len(entries) < self.history_batch:
                return
            start = f"({last}"

    async def _xrange(self, key: bytes, start: str, end: str) -> list:
        for delay in (*HISTORY_RETRY_DELAYS_S, None):
            try:
                return await self.redis.xrange(key, start, end, count=self.history_batch)
            except (RedisConnectionError, RedisTimeoutError) as exc:
                if delay is None:
                    raise
                log.warning("history read failed, retrying: %s", exc)
                await asyncio.sleep(delay)

    async def _live(self, reader: Reader, last: EventId | None) -> AsyncIterator[bytes]:
        while True:
            try:
                async with asyncio.timeout(self.keepalive_s):  # unlike wait_for, no task per wait
                    await reader.wake.wait()
            except TimeoutError:
                yield protocol.KEEPALIVE_FRAME
                continue
            reader.wake.clear()
            frames, ended = [], False
            while reader.frames:
                event_id, frame, is_end = reader.frames.popleft()
                if last is not None and event_id <= last:
                    continue
                frames.append(frame)
                last = event_id
                if is_end:
                    ended = True
                    break
            if frames:
                yield b"".join(frames)
            if ended or reader.overflowed:
                return
