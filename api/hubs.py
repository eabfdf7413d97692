"""What the relay keeps per job and per reader: a job's `Hub` fans each entry out to its `Reader`s.

An entry is turned into an `Entry` (its id, type, fields, SSE frame and that frame as an HTTP chunk)
once, in the hub, and the same object goes to every reader: SSE readers send its frame, in-process
consumers decode its fields. A reader whose task is parked, with nothing queued, gets the chunk written
straight to its connection through its `Outlet` (api/direct_write.py) instead: no task wakes for it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import NamedTuple

from tokenrelay import events
from tokenrelay.core import protocol
from tokenrelay.core.protocol import EventId
from tokenrelay.core.status import JobStatus

from .direct_write import Outlet, chunk_of
from .filters import EntryView, StreamFilter

END_EVENT = events.END.encode()
TOKEN_EVENT = events.TOKEN.encode()
LOST_ERROR = protocol.dumps(events.error("job_lost").data).encode()
LOST_END = protocol.dumps(events.end(JobStatus.FAILED).data).encode()

RawEntry = tuple[bytes, dict[bytes, bytes]]  # (id, fields) as XREAD/XRANGE return them


class Entry(NamedTuple):
    """One stream entry on its way to readers."""

    id: EventId
    raw_id: bytes
    kind: bytes  # the event type, `e`
    fields: dict[bytes, bytes]
    frame: bytes | None  # its SSE bytes; None until rendered (history entries are rendered by the reader)
    chunk: bytes | None = None  # `frame` as an HTTP chunk, for direct writes (live entries only)

    @classmethod
    def of(cls, raw_id: bytes, fields: dict[bytes, bytes], frame: bytes | None = None) -> "Entry":
        return cls(entry_id(raw_id), raw_id, fields[b"e"], fields, frame)

    @classmethod
    def live(cls, raw_id: bytes, fields: dict[bytes, bytes]) -> "Entry":
        """An entry as the hub hands it out: rendered once for every reader."""
        frame = protocol.entry_to_sse(raw_id, fields)
        return cls(entry_id(raw_id), raw_id, fields[b"e"], fields, frame, chunk_of(frame))

    def sse(self) -> bytes:
        return self.frame or protocol.entry_to_sse(self.raw_id, self.fields)


def entry_id(raw: bytes) -> EventId:
    attempt, seq = raw.split(b"-")
    return EventId(int(attempt), int(seq))


def job_id_of(events_key: bytes) -> str:
    return events_key.decode().rsplit("{", 1)[1].split("}", 1)[0]


class Cursor:
    """Where one reader's stream is: the last entry the relay read for it (None: nothing yet)."""

    __slots__ = ("last",)

    def __init__(self, last: EventId | None = None) -> None:
        self.last = last


class Reader:
    """One client's bounded queue of entries.

    An idle reader holds no queue and no event: the deque is made at the first entry, and the one
    future it waits on exists only while it waits (each deque or `asyncio.Event` costs ~600 bytes,
    times every idle stream). Keepalives come from the relay's one timer per process (`tick`).

    While its task is parked in `wait` with nothing queued, nothing of its stream is in flight: an
    entry then goes straight to the connection through `outlet` if the outlet takes it, and the task
    sleeps on. Anything else (the outlet refuses, `end`, the task is busy) is queued for the task."""

    __slots__ = ("entries", "limit", "overflowed", "filter", "quiet", "ping", "outlet", "cursor", "skip_to",
                 "_woken", "_waiter")

    def __init__(self, limit: int, stream_filter: StreamFilter | None = None, outlet: Outlet | None = None,
                 cursor: Cursor | None = None) -> None:
        self.entries: deque[Entry] | None = None
        self.limit = limit
        self.filter = stream_filter
        self.overflowed = False
        self.quiet = False  # nothing pushed since the last keepalive tick
        self.ping = False  # a keepalive is due
        self.outlet = outlet
        self.cursor = cursor if cursor is not None else Cursor()
        self.skip_to: EventId | None = None  # entries up to this id were sent already (from history)
        self._woken = False
        self._waiter: asyncio.Future | None = None

    def push(self, entry: Entry) -> None:
        self.quiet = False
        if self.overflowed:
            return
        if self._waiter is not None and not self._woken:  # parked, so nothing queued nor in flight
            if self.skip_to is not None:
                if entry.id <= self.skip_to:
                    return
                self.skip_to = None  # entries come in order: every later one is new too
            outlet = self.outlet
            if outlet is not None and entry.chunk is not None and entry.kind != END_EVENT and outlet.offer(entry.chunk):
                self.cursor.last = entry.id
                return
        if self.entries is None:
            self.entries = deque()
        if len(self.entries) >= self.limit:
            self.overflowed = True
        else:
            self.entries.append(entry)
        self.wake()

    def push_all(self, batch: list[Entry], together: bytes) -> None:
        """`push` each of `batch` (two or more entries, in order), as one write if it can go straight
        through: `together` holds the chunk of every entry of the batch but a final `end`."""
        if (self._waiter is None or self._woken or self.overflowed or self.skip_to is not None
                or self.outlet is None or not self.outlet.offer(together)):
            for entry in batch:
                self.push(entry)
            return
        self.quiet = False
        last = batch[-1]
        if last.kind == END_EVENT:
            self.cursor.last = batch[-2].id
            self.push(last)  # still parked: queued for the task, which ends the response
        else:
            self.cursor.last = last.id

    def tick(self) -> None:
        """The relay's keepalive timer: a reader quiet for a whole period gets a keepalive."""
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

    __slots__ = ("key", "readers", "filtered", "position", "live", "done", "owner", "reading")

    def __init__(self, key: bytes) -> None:
        self.key = key
        self.owner: str | None = None  # the job's owner, as a reader's admission read it from Redis
        self.readers: set[Reader] = set()
        self.filtered = 0  # readers with a filter
        self.position: EventId | None = None  # last entry the shared loop has read
        self.live = False
        self.done = False
        self.reading = False  # in the relay's read in flight

    def lost_entries(self) -> list[RawEntry]:
        """An `error` and an `end` right after what was relayed, for a job whose data is gone."""
        at = self.position or EventId(0, 0)
        return [(f"{at.attempt}-{at.seq + 1}".encode(), {b"e": events.ERROR.encode(), b"d": LOST_ERROR}),
                (f"{at.attempt}-{at.seq + 2}".encode(), {b"e": END_EVENT, b"d": LOST_END})]

    def deliver(self, entries: list[RawEntry]) -> tuple[int, int]:
        """Hand the entries to every reader that wants them; (events, token events) handed out."""
        batch = []
        for raw_id, fields in entries:
            entry = Entry.live(raw_id, fields)
            batch.append(entry)
            self.position = entry.id
            if entry.kind == END_EVENT:
                self.done = True
                break
        if len(batch) == 1:
            return self._deliver_each(batch, self.readers)
        plain = [reader for reader in self.readers if reader.filter is None] if self.filtered else self.readers
        # A reader without a filter takes every entry: one write of them all, not one per entry (a round
        # carries several entries when the relay fell behind, and that is when writes count most).
        together = chunk_of(b"".join([entry.frame for entry in batch if entry.kind != END_EVENT]))
        for reader in plain:
            reader.push_all(batch, together)
        tokens = sum(entry.kind == TOKEN_EVENT for entry in batch)
        events, tokens = len(batch) * len(plain), tokens * len(plain)
        if self.filtered:
            more_events, more_tokens = self._deliver_each(batch, [r for r in self.readers if r.filter is not None])
            events, tokens = events + more_events, tokens + more_tokens
        return events, tokens

    def _deliver_each(self, batch: list[Entry], readers) -> tuple[int, int]:
        events = tokens = 0
        for entry in batch:
            if self.filtered:
                view = EntryView(entry.kind, entry.fields[b"d"])
                takers = [reader for reader in readers if reader.filter is None or reader.filter.accepts(view)]
            else:
                takers = readers
            for reader in takers:
                reader.push(entry)
            events += len(takers)
            if entry.kind == TOKEN_EVENT:
                tokens += len(takers)
        return events, tokens
