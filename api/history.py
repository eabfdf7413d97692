"""A job's past, read from its Redis stream for readers that join or resume: one XRANGE per range however
many readers ask for it at the same time (singleflight), retried through short Redis outages."""

from __future__ import annotations

import asyncio
import logging

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tokenrelay.core.protocol import EventId

from .filters import EntryView, StreamFilter
from .hubs import END_EVENT, TOKEN_EVENT, Entry

log = logging.getLogger("tokenrelay.gateway.relay")

HISTORY_RETRY_DELAYS_S = (0.1, 0.5, 1.0)


class History:
    def __init__(self, redis: Redis | RedisCluster, batch: int, on_sent) -> None:
        self.redis = redis
        self.batch = batch
        self._on_sent = on_sent  # RelayHooks.on_sent
        self._reads_in_flight: dict[tuple[bytes, str, str], asyncio.Future] = {}

    async def read(self, key: bytes, after: EventId | None, until: EventId | None,
                   stream_filter: StreamFilter | None = None):
        """(batch, last id read, ended) per XRANGE of the entries after `after` up to `until` (None: the end);
        `last` moves past entries the filter drops, and reading stops after `end`."""
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
                self._on_sent(len(batch), tokens)
            yield batch, last, ended
            if ended or len(entries) < self.batch:
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
                return await self.redis.xrange(key, start, end, count=self.batch)
            except (RedisConnectionError, RedisTimeoutError) as exc:
                if delay is None:
                    raise
                log.warning("history read failed, retrying: %s", exc)
                await asyncio.sleep(delay)
