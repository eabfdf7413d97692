"""Scenario 8 and Redis unreachable: a stalled server (SIGSTOP), a blackholed network, a refused one."""

from __future__ import annotations

import os
import signal
import time

import httpx
import pytest

from ..support.processes import Stack
from .helpers import (
    SLOW_JOB,
    readers_mid_stream,
    record,
    submit,
    time_to_next_token,
    wait_ready,
)
from .invariants import check_reader
from .proxy import FaultProxy

STALL_S = 3.0


def test_redis_stalled_by_sigstop_no_duplicates_and_recovery(own_redis, fault_settings, capsys):
    server = own_redis()
    with Stack(server.url, fault_settings, workers=1) as stack:
        job_id = submit(stack.url)
        readers = readers_mid_stream(stack.urls, job_id)
        os.kill(server.process.pid, signal.SIGSTOP)
        try:
            time.sleep(STALL_S)  # the fault itself lasts this long; nothing is awaited here
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
        resumed_s = time_to_next_token(readers)
        summaries = [check_reader(r.join(), record(stack.url, job_id)) for r in readers]
        assert {(s["status"], s["tokens"], s["attempt"]) for s in summaries} == {("succeeded", 60, 1)}
    with capsys.disabled():
        print(f"\n[redis SIGSTOP {STALL_S:.0f} s] readers got events again {resumed_s:.2f} s after SIGCONT")


def test_redis_blackholed_then_healed_no_duplicates_and_recovery(own_redis, fault_settings, capsys):
    server = own_redis()
    with FaultProxy(server.port) as proxy, Stack(proxy.url, fault_settings, workers=1) as stack:
        job_id = submit(stack.url)
        readers = readers_mid_stream(stack.urls, job_id)
        proxy.set_mode("blackhole")
        time.sleep(STALL_S)  # the partition lasts this long
        proxy.set_mode("pass")
        resumed_s = time_to_next_token(readers)
        summaries = [check_reader(r.join(), record(stack.url, job_id)) for r in readers]
        assert {(s["status"], s["tokens"]) for s in summaries} == {("succeeded", 60)}
    with capsys.disabled():
        print(f"\n[redis blackholed {STALL_S:.0f} s] readers got events again {resumed_s:.2f} s after healing")


@pytest.mark.parametrize("fault", ["reset", "blackhole"])
def test_while_redis_is_unreachable_ready_and_submit_answer_503_promptly(own_redis, fault_settings, fault, capsys):
    server = own_redis()
    with FaultProxy(server.port) as proxy, Stack(proxy.url, fault_settings, workers=1) as stack:
        proxy.set_mode(fault)
        timings = {}
        for name, call in [("ready", lambda: httpx.get(f"{stack.url}/ready", timeout=30)),
                           ("submit", lambda: httpx.post(f"{stack.url}/v1/jobs", json=SLOW_JOB, timeout=30)),
                           ("ready again", lambda: httpx.get(f"{stack.url}/ready", timeout=30))]:
            started = time.monotonic()
            response = call()
            timings[name] = time.monotonic() - started
            assert response.status_code == 503, response.text
            if name == "submit":
                assert response.json()["error"]["type"] == "service_unavailable"
                assert int(response.headers["Retry-After"]) >= 1
            assert timings[name] < 6, f"{name} took {timings[name]:.1f} s"
        proxy.set_mode("pass")
        healed_s = wait_ready(stack.url)
        job_id = submit(stack.url, {**SLOW_JOB, "params": {"max_tokens": 5, "tokens_per_second": 0}})
        check_reader(readers_mid_stream(stack.urls, job_id, count=1, tokens=0)[0].join(), record(stack.url, job_id))
    with capsys.disabled():
        print(f"\n[redis unreachable: {fault}] " + ", ".join(f"{k} 503 in {v:.2f} s" for k, v in timings.items())
              + f"; ready {healed_s:.2f} s after healing")
