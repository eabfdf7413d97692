"""The submit gate: refusals past max_pending_submits, with a Retry-After that grows with the backlog."""

from __future__ import annotations

import asyncio

import pytest

from api.backpressure import MAX_RETRY_AFTER_S, OVERLOADED_RETRY_AFTER_S, SubmitGate
from tokenrelay.errors import Overloaded


def gate_with_pace(completed: int, pending: int, max_pending: int = 10_000) -> SubmitGate:
    """A gate that completed `completed` submits within the last second and has `pending` in progress."""
    gate = SubmitGate(max_pending, concurrency=4)
    for _ in range(completed):
        gate.enter()
        gate.leave()
    for _ in range(pending):
        gate.enter()
    return gate


def test_retry_after_grows_with_the_backlog_and_is_never_under_two_seconds():
    # 10 submits done within a second: a pace of about 10 per second.
    waits = [gate_with_pace(10, pending).retry_after_s() for pending in (0, 5, 50, 200, 5_000)]
    assert waits[0] == waits[1] == OVERLOADED_RETRY_AFTER_S
    assert waits[2] == 5 and waits[3] == 20
    assert waits[4] == MAX_RETRY_AFTER_S
    assert waits == sorted(waits)


def test_past_max_pending_a_submit_is_refused_as_overloaded():
    gate = gate_with_pace(10, 3, max_pending=3)
    with pytest.raises(Overloaded) as refused:
        gate.enter()
    assert refused.value.status_code == 503 and refused.value.code == "overloaded"
    assert refused.value.param == "max_pending_submits" and refused.value.retry_after_s >= 2
    gate.leave()
    gate.enter()  # room again


def test_turns_let_a_few_submits_in_at_once():
    gate = SubmitGate(100, concurrency=2)
    inside, most = 0, 0

    async def submit() -> None:
        nonlocal inside, most
        async with gate.turn():
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.01)
            inside -= 1

    async def burst() -> None:
        await asyncio.gather(*(submit() for _ in range(20)))

    asyncio.run(burst())
    assert most == 2
