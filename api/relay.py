"""The gateway's relay: each job's stream is read once per process and fanned out to its readers.

Deliberate choices (read before changing):
- Workers `SPUBLISH` a notification on the job's channel (in the job's slot) after each write; the
  gateway `SSUBSCRIBE`s to the channels of the jobs it follows (tokenrelay/core/shardsub.py) and, for
  each notified job, reads what is new with one `XRANGE` from the position it last relayed. The
  stream stays the only history. Redis work per token is one notification and one range read per
  gateway: it grows neither with readers nor with the number of live jobs a gateway follows (one
  shared XREAD that named every followed stream did, and cannot span the slots of a cluster).
- One pump task reads every notified job, all of them in one pipeline per round: a job is never read
  twice at once, so events reach readers in order. Notifications that arrive while a round is in
  flight coalesce into the next round.
- Subscribe, then read: a subscription's confirmation makes the pump read the job from its position,
  so whatever landed before the subscription took effect is read, and nothing starts at `$`.
- A reader replays history first, then joins the job's hub at the hub's current position and
  reads the gap up to it; live events it already has are dropped by id. Nothing starts at `$`.
- Each entry becomes SSE bytes once, in the hub (api/hubs.py), and the same bytes go to every
  reader. Readers with a filter (api/filters.py) also get a view of the entry's type and data,
  built once per entry and only when such a reader is there; a filtered-out event costs a reader
  nothing.
- Each reader has a bounded queue. A reader that falls `client_buffer_events` behind is cut off
  (its response ends without `end`) and resumes with Last-Event-ID: its memory stays bounded and
  no event is dropped silently.
- Keepalives come from one timer per process (`_keepalive_forever`), which wakes the readers that
  were quiet for a whole period: an idle stream holds no timer object of its own.
- Readers asking for the same history range at the same time share one XRANGE (`_xrange`), and a
  reader of a job this process already relays is admitted from the hub (`owner_of`): a burst of
  joins on one job costs Redis about one read, not a few commands per reader.
- After Redis failed (a read, or a subscription's connection), the pump checks that each followed job
  still has its record, until Redis answers. A Redis restarted without persistence has none: the job
  can never write its `end`, so its readers get a final `error` (job_lost) and `end` from the gateway
  instead of waiting forever.
- Metrics attach through `RelayHooks`, called inline at fixed points; the relay knows no metric.

Two ways to read a job, with the same ordering, resume and slow-reader rules:
- `follow(job_id, after)` yields SSE bytes, for HTTP responses that relay the stream as it is.
- `follow_events(job_id, after)` yields decoded `Event`s (`id`, `event`, `data`), for in-process
  consumers that speak another wire format (the OpenAI-compatible routes):

      async for event in relay.follow_events(job_id, after=None):
          if event is None:        # keepalive_s passed without an event: send a keepalive if you can
              continue
          ...                      # event.event is "token", "reset", "error", "end", ...; stops after "end"

  Either ends without `end` when the reader fell `client_buffer_events` behind (the job goes on).
  Each consumer decodes its own events (decoded JSON is mutable, so none is shared between readers).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tokenrelay.core import protocol
from tokenrelay.core.connections import RedisTarget, subscriber_connector
from tokenrelay.core.keys import Keys
from tokenrelay.core.protocol import EventId
from tokenrelay.core.shardsub import ShardSubscriber
from tokenrelay.events import Event

from .filters import EntryView, StreamFilter
from .hubs import END_EVENT, TOKEN_EVENT, Entry, Hub, Reader, job_id_of

log = logging.getLogger("tokenrelay.gateway.relay")

HISTORY_RETRY_DELAYS_S = (0.1, 0.5, 1.0)
RETRY_DELAY_S = 0.5


class RelayHooks:
    """What the relay reports as it works; each hook is a no-op here (api/metrics.py overrides them).

    Hooks run inline on the event loop, in the relay's hot path: they must be quick and must not raise.
    """

    def on_read(self, entries: int) -> None:
        """A round of reads (one pipeline of XRANGEs) returned, with `entries` entries of followed jobs."""

    def on_read_failed(self, error: Exception) -> None:
        """A round of reads failed; the relay retries by itself."""

    def on_sent(self, events: int, tokens: int) -> None:
        """One reader was handed `events` events, `tokens` of them `token` events."""

    def on_reader_dropped(self) -> None:
        """A reader fell `client_buffer_events` behind and was cut off (it resumes by id)."""


class Relay:
    def __init__(self, redis: Redis | RedisCluster, target: RedisTarget, keys: Keys, *, history_batch: int,
                 client_buffer_events: int, keepalive_s: float, hooks: RelayHooks | None = None) -> None:
        self.redis = redis
        self.keys = keys
        self.history_batch = history_batch
        self.client_buffer_events = client_buffer_events
        self.keepalive_s = keepalive_s
        self.hooks = hooks or RelayHooks()
        self.hubs: dict[bytes, Hub] = {}
        self._channels: dict[bytes, bytes] = {}  # notification channel -> events key
        connect = subscriber_connector(target, client_name=f"tokenrelay-gateway-sub:{os.getpid()}")
        self.subscriber = ShardSubscriber(redis, connect, on_message=self._notified, on_ready=self._notified,
                                          on_lost=self._lost)
        self._dirty: dict[bytes, None] = {}  # events keys to read, in arrival order
        self._pending = asyncio.Event()
        self._check_records = False
        self._task: asyncio.Task | None = None
        self._keepalive_task: asyncio.Task | None = None
        self._reads_in_flight: dict[tuple[bytes, str, str], asyncio.Future] = {}
        self._stopping = False

    @property
    def reader_count(self) -> int:
        return sum(len(hub.readers) for hub in self.hubs.values())

    async def start(self) -> None:
        self._task = asyncio.create_task(self._pump_forever(), name="tokenrelay-relay")
        self._keepalive_task = asyncio.create_task(self._keepalive_forever(), name="tokenrelay-keepalive")

    async def stop(self) -> None:
        await self.subscriber.close()
        if self._keepalive_task:
            self._keepalive_task.cancel()
            await asyncio.gather(self._keepalive_task, return_exceptions=True)
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

    async def _start_hub(self, hub: Hub) -> None:
        channel = self.keys.live(job_id_of(hub.key)).encode()
        self._channels[channel] = hub.key
        await self.subscriber.subscribe(channel)
        # Read the job now too: its confirmation makes the pump read it again, which covers what lands
        # until the subscription takes effect; this read only brings the first events sooner.
        self._mark(hub.key)

    def _end_hub(self, hub: Hub) -> None:
        channel = self.keys.live(job_id_of(hub.key)).encode()
        self._channels.pop(channel, None)
        self.subscriber.release(channel)

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
                    await asyncio.sleep(RETRY_DELAY_S)
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
                self.hooks.on_read_failed(exc)
                self._check_records = True
                for hub in hubs:
                    self._mark(hub.key)
                await asyncio.sleep(RETRY_DELAY_S)
                continue
            read = 0
            for hub, entries in zip(hubs, results):
                read += len(entries)
                if entries and hub.live and not hub.done:
                    hub.deliver(entries)
                    if len(entries) >= self.history_batch and not hub.done:
                        self._mark(hub.key)
            self.hooks.on_read(read)

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
                    pipe.exists(self.keys.meta(job_id_of(hub.key)))
                found = await pipe.execute() if hubs else []
        except Exception:  # noqa: BLE001 - still unreachable: check again shortly
            return False
        for hub, exists in zip(hubs, found):
            if not exists:
                log.warning("job %s lost its record (Redis restarted empty?); ending its streams", job_id_of(hub.key))
                hub.deliver(hub.lost_entries())
        return True

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
        async for batch in self._follow(job_id, after, stream_filter, fresh, owner):
            yield protocol.KEEPALIVE_FRAME if batch is None else b"".join([entry.sse() for entry in batch])

    async def follow_events(self, job_id: str, after: EventId | None = None,
                            stream_filter: StreamFilter | None = None, *,
                            fresh: bool = False) -> AsyncIterator[Event | None]:
        """The same stream as `follow`, as decoded events; None each time `keepalive_s` passes without one."""
        async for batch in self._follow(job_id, after, stream_filter, fresh):
            if batch is None:
                yield None
                continue
            for entry in batch:
                yield Event(id=entry.raw_id.decode(), event=entry.kind.decode(), data=json.loads(entry.fields[b"d"]))

    async def _follow(self, job_id: str, after: EventId | None, stream_filter: StreamFilter | None,
                      fresh: bool, owner: str | None = None) -> AsyncIterator[list[Entry] | None]:
        """Batches of a job's entries after `after`; None for each keepalive."""
        key = self.keys.events(job_id).encode()
        last = after
        # 1. History, straight from Redis.
        if not fresh:
            async for batch, last, ended in self._history(key, last, None, stream_filter):
                if batch:  # a filter may leave a batch empty; `last` still moves past it
                    yield batch
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
                await self._start_hub(hub)
            elif hub.position is not None and (last is None or hub.position > last):
                async for batch, last, ended in self._history(key, last, hub.position, stream_filter):
                    if batch:
                        yield batch
                    if ended:
                        return
            # 3. Live.
            async for batch in self._live(reader, last):
                yield batch
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
            batch, last, ended, tokens = [], after, False, 0
            for raw_id, fields in entries:
                entry = Entry.of(raw_id, fields)
                last = entry.id
                if stream_filter is None or stream_filter.accepts(EntryView(entry.kind, fields[b"d"])):
                    batch.append(entry)
                    tokens += entry.kind == TOKEN_EVENT
                if entry.kind == END_EVENT:
                    ended = True
                    break
            after = last
            if batch:
                self.hooks.on_sent(len(batch), tokens)
            yield batch, last, ended
            if ended or len(entries) < self.history_batch:
                return
            start = f"({last}"

    async def _xrange(self, key: bytes, start: str, end: str) -> list:
        """Readers asking for the same range at the same time share one read (singleflight). The
        read runs in a task of its own, so a reader that leaves does not cut it short for the others."""
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

    async def _live(self, reader: Reader, last: EventId | None) -> AsyncIterator[list[Entry] | None]:
        while True:
            await reader.wait()
            if reader.ping and not reader.entries:
                reader.ping = False
                yield None  # a keepalive
                continue
            reader.ping = False
            batch, ended, tokens = [], False, 0
            while reader.entries:
                entry = reader.entries.popleft()
                if last is not None and entry.id <= last:
                    continue
                batch.append(entry)
                last = entry.id
                if entry.kind == TOKEN_EVENT:
                    tokens += 1
                elif entry.kind == END_EVENT:
                    ended = True
                    break
            if batch:
                self.hooks.on_sent(len(batch), tokens)
                yield batch
            if ended:
                return
            if reader.overflowed:
                self.hooks.on_reader_dropped()
                return
