"""Provider retries inside one job attempt: errors that may pass are retried with backoff, invisibly
before anything went out and behind a `reset` event after; bad requests and auth errors are not retried.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from .. import events
from ..events import Event
from .runner import Outcome, _causes, classify_error

log = logging.getLogger("tokenrelay.engine.retry")

RETRYABLE_STATUS = frozenset({408, 409, 425, 429})
PROVIDER_RETRY = "provider_retry"


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3
    delays_s: tuple[float, ...] = (0.5, 2.0)

    def delay_s(self, failures: int) -> float:
        if not self.delays_s:
            return 0.0
        return self.delays_s[min(failures - 1, len(self.delays_s) - 1)]


def is_retryable(exc: BaseException) -> bool:
    kind = classify_error(exc)
    if kind == "provider_unavailable":
        return True
    if kind != "provider_error":
        return False
    for cause in _causes(exc):
        status = getattr(cause, "status_code", None)
        if isinstance(status, int):
            return status in RETRYABLE_STATUS or status >= 500
    return False


async def with_retries(run: Callable[[], AsyncIterator[Event]], outcome: Outcome, policy: RetryPolicy,
                       attempt: int) -> AsyncIterator[Event]:
    """The events of `run()`, tried up to `policy.attempts` times; `outcome` holds the last try's."""
    failures = 0
    while True:
        emitted = 0
        try:
            async for event in run():
                emitted += 1
                yield event
            return
        except Exception as exc:
            failures += 1
            if failures >= policy.attempts or not is_retryable(exc):
                raise
            log.warning("provider error (try %d of %d), retrying: %s", failures, policy.attempts,
                        type(exc).__name__)
        if emitted:
            outcome.clear()
            yield events.reset(attempt, PROVIDER_RETRY)
        await asyncio.sleep(policy.delay_s(failures))
