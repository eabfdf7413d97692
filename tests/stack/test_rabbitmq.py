"""RabbitMQ as the Celery broker (Redis keeps streams and records): max_queued_jobs and the queue-depth
metric read the AMQP queue; jobs stream end to end; a worker SIGKILLed mid-stream is recovered."""

from __future__ import annotations

import signal

import httpx
import pytest

from tokenrelay import Client

from ..faults.helpers import SLOW_JOB, readers_mid_stream, record, submit
from ..faults.invariants import check_reader
from ..support.http import assert_error
from ..support.metrics import scrape, value
from ..support.processes import Stack, wait_until
from ..support.rabbitmq import RabbitMQServer, available

JOB = {"model": "demo", "prompt": "over amqp", "params": {"max_tokens": 5, "tokens_per_second": 0}}


@pytest.fixture(scope="module")
def rabbitmq():
    if not available():
        pytest.fail("rabbitmq-server is not installed: `make test` installs it (scripts/ensure-rabbitmq.sh)")
    with RabbitMQServer() as server:
        yield server


def test_queue_limit_metrics_streams_and_a_lost_worker_on_rabbitmq(rabbitmq, redis_server, isolated_settings):
    settings = {**isolated_settings, "broker_url": rabbitmq.url, "max_queued_jobs": 3}
    with Stack(redis_server.url, settings, workers=0) as stack:
        queued = [submit(stack.url, JOB) for _ in range(3)]
        refused = httpx.post(f"{stack.url}/v1/jobs", json=JOB, timeout=10)
        assert_error(refused, 429, mentions="max_queued_jobs", param="max_queued_jobs")
        samples = scrape(f"{stack.url}/metrics")
        assert value(samples, "tokenrelay_queue_depth") == 3
        assert value(samples, "tokenrelay_jobs", status="queued") == 3

        stack.add_worker()
        stack.add_worker()
        with Client(stack.url) as client:
            for job_id in queued:
                summary = check_reader(list(client.stream(job_id)), record(stack.url, job_id))
                assert (summary["status"], summary["tokens"]) == ("succeeded", 5)
        wait_until(lambda: value(scrape(f"{stack.url}/metrics"), "tokenrelay_queue_depth") == 0, timeout_s=10,
                   message="the queue to drain")
        assert httpx.post(f"{stack.url}/v1/jobs", json=JOB, timeout=10).status_code == 202

        job_id = submit(stack.url, SLOW_JOB)
        readers = readers_mid_stream(stack.urls, job_id, count=2)
        victim = next(w for w in stack.workers if f"job {job_id} attempt 1 started" in w.output())
        victim.signal(signal.SIGKILL)
        summaries = [check_reader(r.join(), record(stack.url, job_id)) for r in readers]
        assert {(s["status"], s["tokens"], s["attempt"], s["resets"]) for s in summaries} == {("succeeded", 60, 2, 1)}
