"""Admitting a job: quotas, the record, the broker; and undoing a submit that answered 503."""

from __future__ import annotations

import asyncio
import logging

from tokenrelay.core.store import JobRecord, create_job, delete_job
from tokenrelay.errors import ServiceUnavailable

from .quotas import admit_active_job, check_queue_depth, release_active_job

log = logging.getLogger("tokenrelay.gateway")

CLEANUP_TIMEOUT_S = 2.0
_cleanups: set[asyncio.Task] = set()
FORGET_DELAYS_S = (0.0, 1.0, 5.0, 30.0)


def forget_later(state, principal, job_id: str) -> None:
    """A submit that timed out answered 503: remove what it may have written, once Redis answers,
    so the job does not hold its key's quota slot until it expires."""
    async def forget() -> None:
        for delay in FORGET_DELAYS_S:
            await asyncio.sleep(delay)
            try:
                async with asyncio.timeout(CLEANUP_TIMEOUT_S):
                    await delete_job(state.redis, state.keys, job_id)
                    await release_active_job(state.redis, state.keys, principal, job_id)
                return
            except Exception:  # noqa: BLE001 - still unreachable: try again later
                continue

    task = asyncio.create_task(forget())
    _cleanups.add(task)  # a reference, so the task is not collected before it ran
    task.add_done_callback(_cleanups.discard)


async def admit(state, principal, job_id: str, model: str, request_doc: dict, metadata: dict) -> JobRecord:
    """Quotas, then the record, then the broker; undone if the broker refuses."""
    await check_queue_depth(state)
    await admit_active_job(state.redis, state.keys, state.settings, principal, job_id)
    ttl_s = int(state.settings.retention_s + state.settings.job_timeout_s)
    try:
        record = await create_job(state.redis, state.keys, job_id=job_id, model=model, request=request_doc,
                                  metadata=metadata, ttl_s=ttl_s, owner=principal.name)
        await state.tasks.send(job_id)
    except Exception as exc:  # noqa: BLE001 - Redis or the broker is down: say so, keep no orphan record
        log.warning("could not enqueue job %s: %s", job_id, type(exc).__name__)
        try:
            await delete_job(state.redis, state.keys, job_id)
            await release_active_job(state.redis, state.keys, principal, job_id)
        except Exception:  # noqa: BLE001 - Redis itself is gone; the record expires on its own
            pass
        raise ServiceUnavailable("the job queue is unavailable; retry shortly") from None
    return record
