"""A Hypothesis state machine over the stream protocol, against real processes: submit, read a little,
disconnect, resume with Last-Event-ID, cancel, kill a worker. After every run each job's reader,
resumed to the end, satisfies the reader invariant (tests/faults/invariants.py)."""

from __future__ import annotations

import signal
import time

import httpx
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tokenrelay.sse import SSEParser

from ..support.processes import Stack
from .helpers import record, submit
from .invariants import check_reader

READ_WINDOW_S = 1.0


def read_some(url: str, job_id: str, log: list, max_events: int) -> None:
    """One connection: resume after the last event held, take up to max_events, hang up."""
    headers = {"Last-Event-ID": log[-1].id} if log else {}
    deadline = time.monotonic() + READ_WINDOW_S
    with httpx.stream("GET", f"{url}/v1/jobs/{job_id}/stream", headers=headers, timeout=10) as response:
        assert response.status_code == 200, response.read()
        parser = SSEParser()
        for text in response.iter_text():
            for event in parser.feed(text):
                log.append(event)
                max_events -= 1
                if event.event == "end" or max_events <= 0:
                    return
            if time.monotonic() > deadline:  # keepalives (1 s) wake this loop up
                return


@pytest.fixture(scope="module")
def machine_stack(redis_server, stack_settings):
    settings_ = {**stack_settings, "key_prefix": "tokenrelay-machine", "queue_name": "tokenrelay-machine",
                 "keepalive_s": 0.5}
    with Stack(redis_server.url, settings_, workers=2) as stack:
        yield stack


def test_stream_protocol_state_machine(machine_stack):
    stack = machine_stack

    class StreamProtocol(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.jobs: dict[str, list] = {}
            self.cancelled: set[str] = set()
            self.kills = 0

        @rule(tokens=st.integers(1, 40), pace=st.sampled_from([0, 40, 100]))
        def submit_job(self, tokens: int, pace: int) -> None:
            job_id = submit(stack.url, {"model": "demo", "prompt": "state machine",
                                        "params": {"max_tokens": tokens, "tokens_per_second": pace}})
            self.jobs[job_id] = []

        @precondition(lambda self: self.jobs)
        @rule(data=st.data(), events=st.integers(0, 15))
        def read_then_disconnect(self, data, events: int) -> None:
            job_id = data.draw(st.sampled_from(sorted(self.jobs)))
            log = self.jobs[job_id]
            if not (log and log[-1].event == "end"):
                read_some(stack.url, job_id, log, events)

        @precondition(lambda self: self.jobs)
        @rule(data=st.data())
        def cancel(self, data) -> None:
            job_id = data.draw(st.sampled_from(sorted(self.jobs)))
            response = httpx.post(f"{stack.url}/v1/jobs/{job_id}/cancel", timeout=10)
            assert response.status_code in (200, 202)
            self.cancelled.add(job_id)

        @precondition(lambda self: self.jobs and self.kills < 1)
        @rule()
        def kill_a_worker(self) -> None:
            victim = next(w for w in stack.workers if w.alive())
            victim.signal(signal.SIGKILL)
            stack.add_worker()
            self.kills += 1

        @invariant()
        def logs_are_ordered_without_duplicates(self) -> None:
            for log in self.jobs.values():
                ids = [tuple(map(int, e.id.split("-"))) for e in log]
                assert ids == sorted(set(ids))

        def teardown(self) -> None:
            for job_id, log in self.jobs.items():
                deadline = time.monotonic() + 30
                while not (log and log[-1].event == "end"):
                    assert time.monotonic() < deadline, f"job {job_id} never ended"
                    read_some(stack.url, job_id, log, 10_000)
                summary = check_reader(log, record(stack.url, job_id))
                assert summary["status"] in (("succeeded", "cancelled") if job_id in self.cancelled
                                             else ("succeeded",))

    run_state_machine_as_test(StreamProtocol, settings=settings(
        max_examples=6, stateful_step_count=8, deadline=None, derandomize=True,
        suppress_health_check=list(HealthCheck)))
