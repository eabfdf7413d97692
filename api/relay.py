"""The gateway's relay: each job's stream is read once per process and fanned out to its readers.

Deliberate choices (read before changing):
- Workers `SPUBLISH` a notification on the job's channel (in the job's slot) after each write, carrying
  the entries written (`protocol.notification`); the gateway `SSUBSCRIBE`s to the channels of the jobs
  it follows (tokenrelay/core/shardsub.py). Entries that come right after the hub's position, while
  nothing of the job is being read, are relayed as they came; otherwise (a gap: a lost notification or a
  new attempt; a read in flight; a write too big to carry; the final `end`, which notifies its id) the
  job is read with one `XRANGE` from the position it last relayed. The stream stays the only history:
  a notification only ever brings what is next in it. Redis work per token is one notification per
  gateway: it grows neither with readers nor with the number of live jobs a gateway follows (one
  shared XREAD that named every followed stream did, and cannot span the slots of a cluster).
  A superseded attempt's write fails, yet still publishes; its entries could only reach readers
  before the new attempt's `reset` (start.lua runs before any of its writes, and a gateway takes a new
  attempt's entries only from a read), which tells them to drop what that attempt sent.
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
- Readers asking for the same history range at the same time share one XRANGE (api/history.py), and a
  reader of a job this process already relays is admitted from the hub (`owner_of`): a burst of
  joins on one job costs Redis about one read, not a few commands per reader.
- Per reader per live event, the work is one socket write and no wake-up: while a reader's task is
  parked with nothing queued, the hub writes the entry's shared chunk straight to its connection
  (api/direct_write.py); otherwise (a busy or slow reader, `end`, a server without direct writes)
  the entry is queued and the reader's task sends it. The hub counts what it hands out for the
  metrics (one hook call per round, not per reader), a reader skips the ids it already has only
  until its first new one (entries come in order), and the last id sent is kept in a `Cursor` for
  a retry rather than parsed back out of the bytes.
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

from tokenrelay.core import protocol
from tokenrelay.core.connections import RedisTarget, subscriber_connector
from tokenrelay.core.keys import Keys
from tokenrelay.core.protocol import EventId
from tokenrelay.core.shardsub import ShardSubscriber
from tokenrelay.events import Event

from .direct_write import Outlet
from .filters import StreamFilter
from .history import History
from .hubs import END_EVENT, Cursor, Entry, Hub, Reader, entry_id, job_id_of
from .relay_hooks import RelayHooks

log = logging.getLogger("tokenrelay.gateway.relay")

RETRY_DELAY_S = 0.5
# A live read (one pipeline for every notified job) Redis has not answered in this long is retried.
READ_TIMEOUT_S = 3.0


def _comes_next(position: EventId | None, raw_id: bytes) -> bool:
    """True if `raw_id` is the entry right after `position` (the first entry of attempt 1 after none)."""
    entry = entry_id(raw_id)
    if position is None:
        return entry == EventId(1, 0)
    return entry.attempt == position.attempt and entry.seq == position.seq + 1


class Relay:
    def __init__(self, redis: Redis | RedisCluster, target: RedisTarget, keys: Keys, *, history_batch: int,
                 client_buffer_events: int, keepalive_s: float, hooks: RelayHooks | None = None,
                 pump_redis: Redis | RedisCluster | None = None, read_timeout_s: float = READ_TIMEOUT_S) -> None:
        """`pump_redis`: the live reads' own client, best without a socket timeout: redis-py arms a timer
        for every reply, a quarter of the CPU of reading 500 notified jobs; `read_timeout_s` bounds each
        read instead. Default: `redis`."""
        self.redis = redis
        self.pump_redis = pump_redis if pump_redis is not None else redis
        self.read_timeout_s = read_timeout_s
        self.keys = keys
        self.history_batch = history_batch
        self.client_buffer_events = client_buffer_events
        self.keepalive_s = keepalive_s
        self.hooks = hooks or RelayHooks()
        self.hubs: dict[bytes, Hub] = {}
        self._channels: dict[bytes, bytes] = {}  # notification channel -> events key
        connect = subscriber_connector(target, client_name=f"tokenrelay-gateway-sub:{os.getpid()}")
        self.subscriber = ShardSubscriber(redis, connect, on_message=self._notified_with, on_ready=self._notified,
                                          on_lost=self._lost)
        self._dirty: dict[bytes, None] = {}  # events keys to read, in arrival order
        self._pending = asyncio.Event()
        self._check_records = False
        self._task: asyncio.Task | None = None
        self._keepalive_task: asyncio.Task | None = None
        self.history = History(redis, history_batch, self.hooks.on_sent)
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

    def _notified_with(self, channel: bytes, data: bytes) -> None:
        """A worker's write: relay the entries it carries if they come right after the hub's position and
        nothing of the job is being read; otherwise read the job."""
        key = self._channels.get(channel)
        if key is None:
            return
        hub = self.hubs.get(key)
        if (hub is not None and hub.live and not hub.done and not hub.reading and key not in self._dirty
                and not self._check_records):
            entries = protocol.notified_entries(data)
            if entries and _comes_next(hub.position, entries[0][0]):
                sent, tokens = hub.deliver(entries)
                self.hooks.on_notified(len(entries))
                if sent:
                    self.hooks.on_sent(sent, tokens)
                return
        self._mark(key)

    def _lost(self, channels: set[bytes]) -> None:
        # Re-subscribing reads every job again; meanwhile, check that the jobs still exist.
        self._check_records = True
        self._pending.set()

    def _mark(self, key: bytes) -> None:
        self._dirty[key] = None
        self._pending.set()

    async def _start_hub(self, hub: Hub, *, fresh: bool) -> None:
        channel = self.keys.live(job_id_of(hub.key)).encode()
        self._channels[channel] = hub.key
        # Shielded: a first reader that leaves mid-subscribe must not cancel it for the readers that joined
        # meanwhile (they would wait on a hub that is never notified); the hub's end releases it after.
        already = await asyncio.shield(self.subscriber.subscribe(channel))
        # Read the job now too: its confirmation makes the pump read it again, which covers what lands
        # until the subscription takes effect; this read only brings the first events sooner. A job
        # just created here has none yet (its worker has barely been told): the confirmation's read will
        # do, unless the subscription could not be sent (Redis down: the read's failure is what starts
        # the checks for lost jobs).
        if already or not fresh or not self.subscriber.sent(channel):
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
            for hub in hubs:
                hub.reading = True  # a notification meanwhile is read, not relayed: it may hold what this reads
            try:
                async with self.pump_redis.pipeline(transaction=False) as pipe:
                    for hub in hubs:
                        pipe.xrange(hub.key, "-" if hub.position is None else f"({hub.position}", "+",
                                    count=self.history_batch)
                    async with asyncio.timeout(self.read_timeout_s):
                        results = await pipe.execute()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep relaying once Redis is back
                for hub in hubs:
                    hub.reading = False
                log.warning("relay read failed: %s", exc)
                self.hooks.on_read_failed(exc)
                self._check_records = True
                for hub in hubs:
                    self._mark(hub.key)
                await asyncio.sleep(RETRY_DELAY_S)
                continue
            read = sent = tokens = 0
            for hub, entries in zip(hubs, results):
                hub.reading = False
                read += len(entries)
                if entries and hub.live and not hub.done:
                    events, token_events = hub.deliver(entries)
                    sent, tokens = sent + events, tokens + token_events
                    if len(entries) >= self.history_batch and not hub.done:
                        self._mark(hub.key)
            self.hooks.on_read(read)
            if sent:
                self.hooks.on_sent(sent, tokens)

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
                     fresh: bool = False, owner: str | None = None, cursor: Cursor | None = None,
                     outlet: Outlet | None = None) -> AsyncIterator[bytes]:
        """SSE frames of a job after `after` (from the start if None), ending after `end`.

        `fresh`: the job was just created here and has no events yet, so there is no history to read.
        Ends early, without `end`, if the client falls too far behind; it then resumes by id.
        With a filter, only the events it accepts are sent; `last` still tracks every entry read.
        `cursor.last`: the last entry read for this reader, for a retry after a Redis error.
        `outlet`: the response's direct way to its connection (api/direct_write.py); live entries that
        go through it while the reader waits are not yielded here (`cursor` still follows them).
        """
        async for batch in self._follow(job_id, after, stream_filter, fresh, owner, cursor, outlet):
            if batch is None:
                yield protocol.KEEPALIVE_FRAME
            elif len(batch) == 1:  # the usual live case: the hub's bytes as they are
                yield batch[0].sse()
            else:
                yield b"".join([entry.sse() for entry in batch])

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
                      fresh: bool, owner: str | None = None, cursor: Cursor | None = None,
                      outlet: Outlet | None = None) -> AsyncIterator[list[Entry] | None]:
        """Batches of a job's entries after `after`; None for each keepalive."""
        key = self.keys.events(job_id).encode()
        last = after
        cursor = cursor if cursor is not None else Cursor()
        # 1. History, straight from Redis.
        if not fresh:
            async for batch, last, ended in self.history.read(key, last, None, stream_filter):
                cursor.last = last
                if batch:  # a filter may leave a batch empty; `last` still moves past it
                    yield batch
                if ended:
                    return
        # 2. Join the hub; read the gap between our history and the hub's position.
        reader = Reader(self.client_buffer_events, stream_filter, outlet, cursor)
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
                await self._start_hub(hub, fresh=fresh)
            elif hub.position is not None and (last is None or hub.position > last):
                async for batch, last, ended in self.history.read(key, last, hub.position, stream_filter):
                    cursor.last = last
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

    async def _live(self, reader: Reader, last: EventId | None) -> AsyncIterator[list[Entry] | None]:
        # Entries come in order: once one is past `last`, so is every later one. The hub applies the
        # same rule to the entries it writes through the reader's outlet while this task is parked.
        reader.skip_to = last
        while True:
            await reader.wait()
            if reader.ping and not reader.entries:
                reader.ping = False
                yield None  # a keepalive
                continue
            reader.ping = False
            batch, ended = [], False
            entries = reader.entries
            while entries:
                entry = entries.popleft()
                if reader.skip_to is not None:
                    if entry.id <= reader.skip_to:
                        continue
                    reader.skip_to = None
                batch.append(entry)
                if entry.kind == END_EVENT:
                    ended = True
                    break
            if batch:
                reader.cursor.last = batch[-1].id
                yield batch
            if ended:
                return
            if reader.overflowed:
                self.hooks.on_reader_dropped()
                return
