"""Admitting a job, all or nothing: quotas, the record, then the broker.

Two paths, one outcome. On a single Redis (or a Sentinel primary) that is also the broker, one script
(tokenrelay/core/lua/submit.lua) does it all in one round trip: the request's per-minute count (left to
it by the RateLimit middleware), queue depth, the key's active jobs, the record and its indexes, the
Idempotency-Key and the task's LPUSH. The record and the task are
written together or not at all, so that path needs no outbox. On a cluster or with a broker of its
own, the steps below run one by one.

Deliberate choices (read before changing):
- The record is the source of truth and is written first. A submit refused before its record
  exists (503) has sent nothing, and what it may have written is removed once Redis answers.
  Not storing it within `submit_timeout_s` means the gateway is busy (`overloaded`): a Redis
  that is down answers with errors sooner than that (its socket timeout is shorter).
- Step by step, once the record exists the answer is 202 with the job's id, even if the submit
  deadline passes while the task is being sent: sending goes on in the background. The job sits in
  the outbox (api/outbox.py) until the broker took its task, so if this gateway dies first, another
  gateway's sweep sends it. A task sent twice is harmless: the job's lease lets one attempt run.
- A broker that refuses the task (an error, not a slow answer) withdraws the job, unless a worker
  already started it (then the job runs and the answer is 202).
- In one step, a script whose answer did not come back (the deadline, a dropped connection) may have
  run: the refused submit withdraws its job once Redis answers (a worker that pops its task then
  finds no record and runs nothing). Only a worker that started it in between keeps it running;
  its Idempotency-Key then still names it, so a retry with the key gets that job. (Waiting for the
  answer past the deadline once the script is sent would close that gap: not done yet.)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from redis.exceptions import OutOfMemoryError

from tokenrelay.core.status import SubmitOutcome
from tokenrelay.core.store import JobRecord, create_job, delete_job, withdraw_job
from tokenrelay.core.submit import NewJob
from tokenrelay.errors import Overloaded, ServiceUnavailable, TokenRelayError

from . import idempotency, outbox
from .backpressure import PoolExhausted
from .quotas import (RATE_KEY_TTL_S, RequestCount, active_full, active_key, admit_active_job, check_queue_depth,
                     drop_finished, queue_full, release_active_job)

log = logging.getLogger("tokenrelay.gateway")

CLEANUP_TIMEOUT_S = 2.0
FORGET_DELAYS_S = (0.0, 1.0, 5.0, 30.0)
OUTBOX_RETRY_DELAYS_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
_background: set[asyncio.Task] = set()


def _keep(task: asyncio.Task) -> asyncio.Task:
    _background.add(task)  # a reference, so the task is not collected before it ran
    task.add_done_callback(_background.discard)
    return task


@dataclass
class Submission:
    principal: object
    job_id: str
    model: str
    request_doc: dict
    metadata: dict
    idempotency_key: str | None = None
    body_digest: str = ""  # of the request, with an Idempotency-Key
    accepted: bool = False  # answered 202: from now on the job is never withdrawn
    withdrawing: bool = False
    rate_count: RequestCount | None = None  # the request's per-minute count, left to the submit's script


def forget_later(state, sub: Submission, undo: Callable[[object, Submission], Awaitable[None]] | None = None) -> None:
    """A submit refused before its record was confirmed: remove what it may have written, once
    Redis answers, so it holds no quota slot and its Idempotency-Key can be used again. No task
    was sent for it (or, in one step, its record goes before a worker can start it)."""
    undo = undo or _undo

    async def forget() -> None:
        for delay in FORGET_DELAYS_S:
            await asyncio.sleep(delay)
            try:
                async with asyncio.timeout(CLEANUP_TIMEOUT_S):
                    await undo(state, sub)
                return
            except Exception:  # noqa: BLE001 - still unreachable: try again later
                continue

    _keep(asyncio.create_task(forget()))


async def _undo(state, sub: Submission) -> None:
    await delete_job(state.redis, state.keys, sub.job_id)
    await _release(state, sub)


async def _release(state, sub: Submission) -> None:
    await release_active_job(state.redis, state.keys, sub.principal, sub.job_id)
    if sub.idempotency_key is not None:
        await idempotency.release(state, sub.principal, sub.idempotency_key, sub.job_id)


async def _withdraw(state, sub: Submission) -> None:
    """Undo a one-step submit whose answer was lost: its task may be queued, so the record goes only
    if no worker started it (a worker that pops the task then finds nothing to run)."""
    if await withdraw_job(state.redis, state.keys, sub.job_id):
        await _release(state, sub)
    else:
        log.info("job %s was started by a worker before its refused submit was undone; it runs", sub.job_id)


async def write_record(state, sub: Submission) -> JobRecord:
    """Quotas, then the record. Raises before anything runs; the caller undoes on a timeout."""
    try:
        await check_queue_depth(state)
        await admit_active_job(state.redis, state.keys, state.settings, sub.principal, sub.job_id)
    except TokenRelayError:
        if sub.idempotency_key is not None:
            _keep(asyncio.create_task(_undo_quietly(state, sub)))
        raise
    ttl_s = int(state.settings.retention_s + state.settings.job_timeout_s)
    try:
        return await create_job(state.redis, state.keys, job_id=sub.job_id, model=sub.model, request=sub.request_doc,
                                metadata=sub.metadata, ttl_s=ttl_s, owner=sub.principal.name)
    except (asyncio.CancelledError, TimeoutError):
        raise
    except Exception as exc:  # noqa: BLE001 - Redis refused or is gone: nothing was sent
        log.warning("could not store job %s: %s", sub.job_id, type(exc).__name__)
        _keep(asyncio.create_task(_undo_quietly(state, sub)))
        raise ServiceUnavailable("the job store is unavailable; retry shortly") from None


async def _undo_quietly(state, sub: Submission) -> None:
    try:
        async with asyncio.timeout(CLEANUP_TIMEOUT_S):
            await _undo(state, sub)
    except Exception:  # noqa: BLE001 - Redis itself is gone; the record expires on its own
        pass


async def send(state, sub: Submission) -> bool:
    """Put the job in the outbox, send its task, confirm. False if the broker refused and the job
    was withdrawn (nothing runs); True once it was sent, a worker holds it, or the client was
    already told 202 (then it stays in the outbox for the sweep)."""
    try:
        await outbox.add(state.redis, state.keys, sub.job_id)
    except Exception as exc:  # noqa: BLE001 - Redis failed right after storing the record
        log.warning("could not add job %s to the outbox: %s", sub.job_id, type(exc).__name__)
        if not sub.accepted:  # nothing was sent: refuse, and remove the record once Redis answers
            sub.withdrawing = True
            forget_later(state, sub)
            return False
        await _add_to_outbox_eventually(state, sub)  # the client has its id: it must run
    try:
        await state.tasks.send(sub.job_id)
    except Exception as exc:  # noqa: BLE001 - the broker refused or is gone
        log.warning("could not enqueue job %s: %s", sub.job_id, type(exc).__name__)
        if sub.accepted:
            return True
        sub.withdrawing = True
        if await withdraw_job(state.redis, state.keys, sub.job_id):
            await outbox.confirm(state.redis, state.keys, sub.job_id)
            await _undo(state, sub)
            return False
        log.info("job %s was started by a worker before its send failed; it runs", sub.job_id)
    await outbox.confirm(state.redis, state.keys, sub.job_id)
    return True


async def _add_to_outbox_eventually(state, sub: Submission) -> None:
    for delay in OUTBOX_RETRY_DELAYS_S:
        await asyncio.sleep(delay)
        try:
            await outbox.add(state.redis, state.keys, sub.job_id)
            return
        except Exception:  # noqa: BLE001 - still failing: try again later
            continue
    log.error("job %s could not be queued; it stays queued until it expires", sub.job_id)


async def earlier_job_id(state, sub: Submission) -> str | None:
    """A repeat of an earlier request with the same Idempotency-Key, found before the submit waits its
    turn. Not asked in one step: submit.lua looks at the key itself, in the submit's own round trip."""
    if state.submit_script is not None:
        return None
    return await idempotency.lookup(state, sub.principal, sub.idempotency_key, sub.body_digest)


async def admit(state, sub: Submission) -> JobRecord | str:
    """The new job's record, or the id of the job an earlier request with the same Idempotency-Key
    made; or a refusal with nothing sent."""
    if state.submit_script is not None:
        return await _admit_in_one_step(state, sub)
    if sub.idempotency_key is not None:
        held = await idempotency.claim(state, sub.principal, sub.idempotency_key, sub.body_digest, sub.job_id)
        if held is not None:
            return held
    return await _admit_step_by_step(state, sub)


async def _run_script(state, job: NewJob):
    """submit.lua, waiting for a pooled connection as long as the submit's deadline lasts. The pool's own
    wait (POOL_WAIT_S) can run out first during a burst: a waiter woken for a freed connection may find
    it taken by a newer caller (the pool does not queue them), and nothing was sent then."""
    while True:
        try:
            return await state.submit_script(job)
        except PoolExhausted:
            continue


def _saturated(state, sub: Submission) -> Overloaded:
    log.warning("submit of job %s refused: the gateway is saturated", sub.job_id)
    return Overloaded("this gateway is saturated; retry later", retry_after_s=state.submit_gate.retry_after_s())


async def _admit_in_one_step(state, sub: Submission) -> JobRecord | str:
    """submit.lua, and once more if the key looked over its limit but some of its jobs had finished."""
    count = sub.rate_count.take() if sub.rate_count is not None else None
    job = NewJob(sub.job_id, sub.model, sub.request_doc, sub.metadata, sub.principal.name,
                 active_key(state.keys, sub.principal),
                 None if sub.idempotency_key is None else idempotency.entry(
                     state, sub.principal, sub.idempotency_key, sub.body_digest, sub.job_id),
                 None if count is None else (count.key, count.limit, RATE_KEY_TTL_S))
    deadline = asyncio.get_running_loop().time() + state.settings.submit_timeout_s
    try:
        async with asyncio.timeout_at(deadline):
            admitted = await _run_script(state, job)
            if admitted.outcome is SubmitOutcome.ACTIVE_FULL and await drop_finished(
                    state.redis, state.keys, job.active_key, job.job_id):
                admitted = await _run_script(state, replace(job, rate=None))  # counted once already
    except TimeoutError:  # busy, as step by step; the script may have run: withdraw its job
        forget_later(state, sub, _withdraw)
        raise _saturated(state, sub) from None
    except PoolExhausted:  # no connection came free (drop_finished): nothing was sent, and this gateway is busy
        raise _saturated(state, sub) from None
    except (asyncio.CancelledError, OutOfMemoryError):
        raise  # out of memory: refused at the script's first write, so nothing was written ("store is full")
    except Exception as exc:  # noqa: BLE001 - Redis refused or is gone: withdraw whatever may have been written
        log.warning("could not store job %s: %s", sub.job_id, type(exc).__name__)
        forget_later(state, sub, _withdraw)
        raise ServiceUnavailable("the job store is unavailable; retry shortly") from None
    if admitted.outcome is SubmitOutcome.RATE_LIMITED:
        raise count.refusal()
    if admitted.outcome is SubmitOutcome.HELD:
        return idempotency.held(admitted.held, sub.body_digest)
    if admitted.outcome is SubmitOutcome.QUEUE_FULL:
        raise queue_full(state.settings.max_queued_jobs)
    if admitted.outcome is SubmitOutcome.ACTIVE_FULL:
        raise active_full(state.settings)
    return admitted.record


async def _admit_step_by_step(state, sub: Submission) -> JobRecord:
    """The record within the submit deadline, or a refusal with nothing sent; then the task, in the
    background if the deadline passes first (the answer is then 202 all the same)."""
    deadline = asyncio.get_running_loop().time() + state.settings.submit_timeout_s
    try:
        async with asyncio.timeout_at(deadline):
            record = await write_record(state, sub)
    except TimeoutError:
        # Redis that is down answers with errors (refused, or its socket timeout, shorter than this
        # deadline), handled as 503 `service_unavailable`. Reaching the deadline means waiting
        # behind other work: this gateway is busy.
        forget_later(state, sub)
        raise _saturated(state, sub) from None
    task = send_in_background(state, sub)
    try:
        async with asyncio.timeout_at(deadline):
            sent = await asyncio.shield(task)
    except TimeoutError:
        if sub.withdrawing:  # the broker refused: finish withdrawing, then say so
            sent = await task
        else:
            sub.accepted = True
            log.info("job %s accepted; its task is still being sent", sub.job_id)
            sent = True
    if not sent:
        raise ServiceUnavailable("the job queue is unavailable; retry shortly")
    return record


def send_in_background(state, sub: Submission) -> asyncio.Task:
    async def run() -> bool:
        try:
            return await send(state, sub)
        except Exception as exc:  # noqa: BLE001 - the outbox sweep sends it later
            log.warning("job %s left in the outbox: %s", sub.job_id, type(exc).__name__)
            return True

    return _keep(asyncio.create_task(run()))
