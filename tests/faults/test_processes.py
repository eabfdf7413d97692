"""Scenarios 3, 4 and 5: a worker stopped for a deploy, a job longer than the broker's visibility
timeout, a gateway killed mid-stream."""

from __future__ import annotations

import signal

from ..support.processes import Stack, wait_until
from .helpers import SLOW_JOB, readers_mid_stream, record, submit, time_to_next_token
from .invariants import check_reader


def test_gateway_killed_mid_stream_readers_resume_on_another(redis_server, fault_settings, capsys):
    with Stack(redis_server.url, fault_settings, workers=1) as stack:
        stack.add_gateway()
        job_id = submit(stack.url)
        readers = readers_mid_stream(stack.urls, job_id)  # all on the first gateway until it fails
        stack.gateways[0].signal(signal.SIGKILL)
        resumed_s = time_to_next_token(readers)
        summaries = [check_reader(r.join(), record(stack.urls[1], job_id)) for r in readers]
        assert {(s["status"], s["tokens"], s["attempt"]) for s in summaries} == {("succeeded", 60, 1)}
        assert all(r.connections >= 2 for r in readers)
    with capsys.disabled():
        print(f"\n[gateway SIGKILL] readers resumed on the other gateway {resumed_s:.2f} s later")


def test_worker_sigterm_mid_stream_finishes_the_job(redis_server, fault_settings):
    with Stack(redis_server.url, fault_settings, workers=1) as stack:
        job_id = submit(stack.url)
        readers = readers_mid_stream(stack.urls, job_id)
        stack.workers[0].signal(signal.SIGTERM)  # a deploy: warm shutdown
        stack.add_worker()
        summaries = [check_reader(r.join(), record(stack.url, job_id)) for r in readers]
        # Finished by the worker that was stopping: one attempt, no reset.
        assert {(s["status"], s["tokens"], s["attempt"], s["resets"]) for s in summaries} == {("succeeded", 60, 1, 0)}
        wait_until(lambda: not stack.workers[0].alive(), timeout_s=20, message="the old worker to exit")
        # The new worker takes new jobs.
        new_job = submit(stack.url, {**SLOW_JOB, "params": {"max_tokens": 5, "tokens_per_second": 0}})
        check_reader(readers_mid_stream(stack.urls, new_job, count=1, tokens=0)[0].join(),
                     record(stack.url, new_job))


def test_job_longer_than_the_visibility_timeout_never_has_two_writers(redis_server, fault_settings):
    settings = {**fault_settings, "visibility_timeout_s": 1}
    with Stack(redis_server.url, settings, workers=2) as stack:
        job_id = submit(stack.url, {**SLOW_JOB, "params": {"max_tokens": 80, "tokens_per_second": 20}})
        readers = readers_mid_stream(stack.urls, job_id, tokens=1)
        summaries = [check_reader(r.join(), record(stack.url, job_id)) for r in readers]
        assert {(s["status"], s["tokens"], s["attempt"], s["resets"]) for s in summaries} == {("succeeded", 80, 1, 0)}
        assert record(stack.url, job_id)["attempt"] == 1
        # The broker did hand the message out again while the job ran; the lease kept it from running twice.
        wait_until(lambda: any(f"job {job_id} not run" in w.output() for w in stack.workers), timeout_s=10,
                   message="the redelivered message to be refused")
