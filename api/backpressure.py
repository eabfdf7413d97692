"""Back-pressure: telling "this gateway is busy" (503 `overloaded`, Retry-After from the backlog) apart
from "Redis or the broker is down" (503 `service_unavailable`).

Deliberate choices (read before changing):
- A burst is admitted, not refused: submits wait their turn, and only past `max_pending_submits`
  in progress in this process is a submit refused, at once and before anything is written. A busy
  event loop is not a reason to refuse.
- Turns: a few submits at a time talk to Redis and the broker, the rest wait in line. Without
  turns, 2,000 submits each queue for a pooled connection several times over and all finish
  late together (a convoy); with them each finishes in milliseconds once its turn comes, and the
  submit deadline counts from the turn, so waiting in line is never mistaken for a hang.
- Retry-After is the time this gateway needs to work through its backlog at its recent pace,
  never under 2 s: a client told to come back in 1 s during a burst only makes the burst longer.
- A Redis pool whose every connection stayed busy for the whole wait is the same condition seen
  from another side: it raises PoolExhausted, answered as `overloaded` too.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque

from redis.asyncio import BlockingConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError

from tokenrelay.errors import Overloaded

OVERLOADED_RETRY_AFTER_S = 2
MAX_RETRY_AFTER_S = 60
# Nothing completed lately although submits are waiting: Redis or the broker is slow to answer.
STALLED_RETRY_AFTER_S = 10
PACE_WINDOW_S = 10.0


class PoolExhausted(RedisConnectionError):
    """Raised when no pooled Redis connection came free within the pool's wait."""


class GatewayPool(BlockingConnectionPool):
    async def get_connection(self, *args, **kwargs):
        try:
            return await super().get_connection(*args, **kwargs)
        except RedisConnectionError as exc:
            # redis-py raises ConnectionError("No connection available.") from the wait's timeout.
            if isinstance(exc.__cause__, (TimeoutError, asyncio.TimeoutError)):
                raise PoolExhausted("no Redis connection came free") from exc
            raise


class SubmitGate:
    """Submits in progress in this process, and the recent pace at which they complete."""

    def __init__(self, max_pending: int, concurrency: int) -> None:
        self.max_pending = max_pending
        self.pending = 0
        self._done: deque[float] = deque()
        self._turns = asyncio.Semaphore(concurrency)

    def turn(self) -> asyncio.Semaphore:
        """`async with gate.turn():` around the part of a submit that talks to Redis and the broker."""
        return self._turns

    def enter(self) -> None:
        if self.pending >= self.max_pending:
            raise Overloaded(f"this gateway has {self.pending} submits in progress (max_pending_submits); "
                             f"retry in {self.retry_after_s()} s", retry_after_s=self.retry_after_s(),
                             param="max_pending_submits")
        self.pending += 1

    def leave(self) -> None:
        self.pending -= 1
        now = time.monotonic()
        self._done.append(now)
        while self._done and self._done[0] < now - PACE_WINDOW_S:
            self._done.popleft()

    def pace_per_s(self) -> float:
        now = time.monotonic()
        recent = [t for t in self._done if t >= now - PACE_WINDOW_S]
        if len(recent) < 2:
            return 0.0
        return len(recent) / max(now - recent[0], 1.0)

    def retry_after_s(self) -> int:
        pace = self.pace_per_s()
        if pace <= 0:
            return STALLED_RETRY_AFTER_S if self.pending else OVERLOADED_RETRY_AFTER_S
        return min(MAX_RETRY_AFTER_S, max(OVERLOADED_RETRY_AFTER_S, math.ceil(self.pending / pace)))
