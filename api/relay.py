"""The gateway's relay: one shared Redis reader per process fans each job's events out to its readers.

Deliberate choices (read before changing):
- One blocking XREAD loop per process reads every followed job's stream from a known id, on one
  dedicated connection; history reads use a small fixed pool. Redis connections and commands per
  token do not grow with the number of readers.
- A reader replays history first, then joins the job's hub at the hub's current position and
  reads the gap up to it; live events it already has are dropped by id. Nothing starts at `$`.
- Each entry becomes SSE bytes once, in the hub, and the same bytes go to every reader. Readers
  with a filter (api/filters.py) also get a view of the entry's type and data, built once per
  entry and only when such a reader is there; a filtered-out event costs a reader nothing.
- Each reader has a bounded queue. A reader that falls `client_buffer_events` behind is cut off
  (its response ends without `end`) and resumes with Last-Event-ID: its memory stays bounded and
  no event is dropped silently.
- A per-process wake stream is part of every XREAD, so a hub that starts following a job wakes the
  blocked reader at once, with no race between the wake-up and the read.
- Keepalives come from one timer per process (`_keepalive_forever`), which wakes the readers that
  were quiet for a whole period: an idle stream holds no timer object of its own.
- After Redis was unreachable, the loop checks that each followed job still has its record. A
  Redis restarted without persistence has none: the job can never write its `end`, so its readers
  get a final `error` (job_lost) and `end` from the gateway instead of waiting forever.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from collections.abc import AsyncIterator

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tokenrelay import events
from tokenrelay.core import protocol
from tokenrelay.core.keys import Keys
from tokenrelay.core.protocol import EventId
from tokenrelay.core.status import JobStatus

from .filters import EntryView, StreamFilter

log = logging.getLogger("tokenrelay.gateway.relay")

END_EVENT = b"end"
HISTORY_RETRY_DELAYS_S = (0.1, 0.5, 1.0)
WAKE_STREAM_TTL_S = 3600
LOST_ERROR = protocol.dumps(events.error("job_lost").data).encode()
LOST_END = protocol.dumps(events.end(JobStatus.FAILED).data).encode()


def _entry_id(raw: bytes) -> EventId:
    attempt, seq = raw.split(b"-")
    return EventId(int(attempt), int(seq))


def _job_id(events_key: bytes) -> str:
    return events_key.decode().rsplit("{", 1)[1].split("}", 1)[0]


class Reader:
    """One client's bounded queue of SSE frames.

    An idle reader holds no queue and no event: the deque is made at the first frame and the one
    future it waits on exists only while it waits (each deque or `asyncio.Event` costs ~600 bytes)."""

    __slots__ = ("frames", "limit", "overflowed", "filter", "quiet", "ping", "_woken", "_waiter")

    def __init__(self, limit: int, stream_filter: StreamFilter | None = None) -> None:
        self.frames: deque[tuple[EventId, bytes, bool]] | None = None
        self.limit = limit
        self.filter = stream_filter
        self.overflowed = False
        self.quiet = False  # nothing pushed since the last keepalive tick
        self.ping = False  # a keepalive is due
        self._woken = False
        self._waiter: asyncio.Future | None = None

    def push(self, event_id: EventId, frame: bytes, is_end: bool) -> None:
        self.quiet = False
        if self.overflowed:
            return
        if self.frames is None:
            self.frames = deque()
        if len(self.frames) >= self.limit:
            self.overflowed = True
        else:
            self.frames.append((event_id, frame, is_end))
        self.wake()

    def tick(self) -> None:
        """The process's keepalive timer: a reader quiet for a whole period gets a keepalive."""
        if self.quiet:
            self.ping = True
            self.wake()
        self.quiet = True

    def wake(self) -> None:
        self._woken = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait(self) -> None:
        """Until woken (at once if woken since the last wait)."""
        if not self._woken:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        self._woken = False


class Hub:
    """Everything this process relays for one job."""

    __slots__ = ("key", "readers", "filtered", "position", "live", "done", "owner")

    def __init__(self, key: bytes) -> None:
        self.key = key
        self.owner: str | None = None  # the job's owner, as a reader's admission read it from Redis
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
    def __init__(self, redis: Redis, reader_redis: Redis, keys: Keys, *, block_ms: int, history_batch: int,
                 client_buffer_events: int, keepalive_s: float) -> None:
        self.redis = redis
        self.reader_redis = reader_redis
        self.keys = keys
        self.block_ms = block_ms
        self.history_batch = history_batch
        self.client_buffer_events = client_buffer_events
        self.keepalive_s = keepalive_s
        self.hubs: dict[bytes, Hub] = {}
        self.wake_key = f"{keys.prefix}:gateway:{uuid.uuid4().hex}:wake".encode()
        self._wake_position = b"0-0"
        self._reading: set[bytes] = set()  # the keys of the XREAD in flight
        self._wake_sent = False
        self._task: asyncio.Task | None = None
        self._keepalive_task: asyncio.Task | None = None
        self._reads_in_flight: dict[tuple[bytes, str, str], asyncio.Future] = {}
        self.reads = 0

    @property
    def reader_count(self) -> int:
        return sum(len(hub.readers) for hub in self.hubs.values())

    async def start(self) -> None:
        self._task = asyncio.create_task(self._read_forever(), name="tokenrelay-relay")
        self._keepalive_task = asyncio.create_task(self._keepalive_forever(), name="tokenrelay-keepalive")

    async def stop(self) -> None:
        if self._keepalive_task:
            self._keepalive_task.cancel()
            await asyncio.gather(self._keepalive_task, return_exceptions=True)
        if self._task:
            # Close the reader's socket first: cancelling an XREAD blocked inside redis-py 8 can hang.
            await self.reader_redis.connection_pool.disconnect()
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        try:
            await self.redis.delete(self.wake_key)
        except Exception:  # noqa: BLE001 - Redis may be gone at shutdown
            pass

    # -- the shared reader ---------------------------------------------------------------------------

    async def _read_forever(self) -> None:
        check_records = False
        while True:
            if check_records:
                check_records = not await self._end_lost_jobs()
            streams = {hub.key: str(hub.position or EventId(0, 0)) for hub in self.hubs.values()
                       if hub.live and not hub.done}
            streams[self.wake_key] = self._wake_position
            self._reading, self._wake_sent = set(streams), False
            try:
                response = await self.reader_redis.xread(streams, count=self.history_batch, block=self.block_ms)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep relaying once Redis is back
                log.warning("relay read failed: %s", exc)
                check_records = True
                await asyncio.sleep(0.5)
                continue
            self.reads += 1
            for key, entries in response or ():
                if key == self.wake_key:
                    self._wake_position = entries[-1][0]
                    continue
                hub = self.hubs.get(key)
                if hub is not None and hub.live and not hub.done:
                    hub.deliver(entries)

    async def _keepalive_forever(self) -> None:
        """One timer for every stream of the process: each `keepalive_s`, a reader that got nothing
        during the whole last period is woken to send a keepalive (so one goes out after
        keepalive_s to 2 x keepalive_s of silence). An idle stream holds no timer of its own."""
        while True:
            await asyncio.sleep(self.keepalive_s)
            for hub in list(self.hubs.values()):
                for reader in hub.readers:
                    reader.tick()

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

    async def _wake(self, key: bytes) -> None:
        """Make the shared reader include `key` now; at most one wake-up per read in flight."""
        if key in self._reading or self._wake_sent:
            return
        self._wake_sent = True
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xadd(self.wake_key, {"w": "1"}, maxlen=16, approximate=True)
            pipe.expire(self.wake_key, WAKE_STREAM_TTL_S)
            await pipe.execute()

    # -- one client ------------------------------------------------------------------------------------

    def owner_of(self, job_id: str) -> str | None:
        """The owner of a job this process is relaying now (so it exists), without asking Redis;
        None if it is not relaying it."""
        hub = self.hubs.get(self.keys.events(job_id).encode())
        return hub.owner if hub is not None and not hub.done else None

    async def follow(self, job_id: str, after: EventId | None, stream_filter: StreamFilter | None = None, *,
                     fresh: bool = False, owner: str | None = None) -> AsyncIterator[bytes]:
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
        if owner is not None:
            hub.owner = owner
        try:
            if not hub.live:
                hub.live, hub.position = True, last
                await self._wake(key)
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
            if not hub.readers:
                self.hubs.pop(key, None)

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
        """Readers asking for the same range at the same time share one read (a burst of joins on
        one job costs one XRANGE, not one per reader). The read runs in a task of its own, so a
        reader that leaves does not cut it short for the others."""
        flight = (key, start, end)
        shared = self._reads_in_flight.get(flight)
        if shared is None:
            shared = self._reads_in_flight[flight] = asyncio.ensure_future(self._xrange_retrying(key, start, end))
            shared.add_done_callback(lambda _: self._reads_in_flight.pop(flight, None))
        return await asyncio.shield(shared)

    async def _xrange_retrying(self, key: bytes, start: str, end: str) -> list:
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
            await reader.wait()
            if reader.ping and not reader.frames:
                reader.ping = False
                yield protocol.KEEPALIVE_FRAME
                continue
            reader.ping = False
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
