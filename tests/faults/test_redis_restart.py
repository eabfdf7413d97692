"""Scenarios 6 and 7: Redis restarted mid-stream, with AOF and without persistence."""

from __future__ import annotations

import time

import httpx

from ..support.processes import Stack
from .helpers import readers_mid_stream, record, submit, time_to_next_token, wait_ready
from .invariants import check_reader


def test_redis_restart_with_aof_mid_stream_loses_nothing(own_redis, fault_settings, capsys):
    server = own_redis(appendonly=True, extra_args=["--appendfsync", "always"])
    with Stack(server.url, fault_settings, workers=1) as stack:
        job_id = submit(stack.url)
        readers = readers_mid_stream(stack.urls, job_id)
        down_at = time.monotonic()
        server.restart()  # SIGTERM, then the same port and data directory
        restarted_s = time.monotonic() - down_at
        resumed_s = time_to_next_token(readers)
        summaries = [check_reader(r.join(), record(stack.url, job_id)) for r in readers]
        assert {s["status"] for s in summaries} == {"succeeded"}
        assert all(s["tokens"] == 60 for s in summaries)
        # Workers and gateways reconnected by themselves: a new job runs end to end.
        ready_s = wait_ready(stack.url)
        new_job = submit(stack.url, {"model": "demo", "prompt": "after", "params": {"max_tokens": 5,
                                                                                   "tokens_per_second": 0}})
        check_reader(readers_mid_stream(stack.urls, new_job, count=1, tokens=0)[0].join(),
                     record(stack.url, new_job))
    with capsys.disabled():
        print(f"\n[redis restart with AOF] server down {restarted_s:.2f} s; readers got events again "
              f"{resumed_s:.2f} s later; /ready ok {ready_s:.2f} s after that")


def test_redis_restart_without_persistence_ends_streams_with_an_error(own_redis, fault_settings):
    server = own_redis(appendonly=False)
    with Stack(server.url, fault_settings, workers=1) as stack:
        job_id = submit(stack.url)
        readers = readers_mid_stream(stack.urls, job_id)
        server.restart()  # an empty server: the job's record and stream are gone
        for reader in readers:
            events = reader.join()  # never a hang: error, then end
            assert [e.event for e in events[-2:]] == ["error", "end"]
            assert events[-2].data["type"] == "job_lost" and events[-1].data["status"] == "failed"
            assert all(status == 404 for status in reader.refusals)
        # The job is gone for everyone now, plainly.
        assert httpx.get(f"{stack.url}/v1/jobs/{job_id}").status_code == 404
        wait_ready(stack.url)
        new_job = submit(stack.url, {"model": "demo", "prompt": "after", "params": {"max_tokens": 5,
                                                                                   "tokens_per_second": 0}})
        check_reader(readers_mid_stream(stack.urls, new_job, count=1, tokens=0)[0].join(),
                     record(stack.url, new_job))
