"""A submit is all or nothing: a job that can run was answered with its id; a refused submit runs nothing.

The gateways here reach the broker through a fault proxy (the job store directly), so the broker can be
slow to answer or gone while the store is fine.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
import redis
from redis.asyncio import Redis

from api import outbox
from tokenrelay import Client
from tokenrelay.core import protocol
from tokenrelay.core.keys import Keys
from tokenrelay.core.store import create_job

from ..support.http import assert_error
from ..support.processes import start_gateway, start_worker, stack_env, wait_for_workers, wait_until
from .proxy import FaultProxy

JOB = {"model": "demo", "prompt": "all or nothing", "params": {"max_tokens": 8, "tokens_per_second": 0}}


@pytest.fixture
def broker_proxy(redis_server):
    with FaultProxy(redis_server.port) as proxy:
        yield proxy


@pytest.fixture
def stack(redis_server, fault_settings, broker_proxy):
    """A worker on the broker directly; gateway `hasty` gives up on a submit after 0.2 s, `patient` after 5 s."""
    settings = {**fault_settings, "outbox_grace_s": 1}
    worker = start_worker(stack_env(redis_server.url, **settings))
    hasty, hasty_url = start_gateway(stack_env(redis_server.url, **settings, broker_url=broker_proxy.url,
                                               submit_timeout_s=0.2))
    patient, patient_url = start_gateway(stack_env(redis_server.url, **settings, broker_url=broker_proxy.url))
    try:
        wait_for_workers(hasty_url, 1)
        yield {"hasty": hasty_url, "patient": patient_url, "worker": worker, "prefix": settings["key_prefix"]}
    finally:
        for process in (hasty, patient, worker):
            process.stop()


def keys_of(redis_server, prefix: str, suffix: str) -> list[bytes]:
    client = redis.Redis.from_url(redis_server.url)
    try:
        return list(client.scan_iter(match=f"{prefix}:{{*}}:{suffix}", count=1000))
    finally:
        client.close()


def test_a_deadline_that_passes_after_the_task_was_sent_answers_202(stack, broker_proxy, redis_server):
    # The broker takes each task at once but its reply comes 0.5 s later: past the 0.2 s deadline,
    # with the task already queued (and often already running).
    broker_proxy.set_mode("delay", 0.5, replies_only=True)
    answers = [httpx.post(f"{stack['hasty']}/v1/jobs", json=JOB, timeout=10) for _ in range(5)]
    assert [answer.status_code for answer in answers] == [202] * 5, [a.text for a in answers]
    job_ids = [answer.json()["id"] for answer in answers]
    with Client(stack["hasty"]) as client:
        for job_id in job_ids:
            events = list(client.stream(job_id))
            assert events[-1].event == "end" and events[-1].data["status"] == "succeeded"
            assert [e.data["index"] for e in events if e.event == "token"][0] == 0
            assert client.get(job_id)["attempt"] == 1
    client = redis.Redis.from_url(redis_server.url)
    streams = keys_of(redis_server, stack["prefix"], "events")
    assert len(streams) == 5
    assert all(client.ttl(key) > 0 for key in streams)  # no orphan stream
    wait_until(lambda: client.zcard(Keys(stack["prefix"]).outbox) == 0, timeout_s=15, message="outbox drained")
    client.close()
    log = stack["worker"].output()
    assert "superseded" not in log and "not run: missing" not in log


def test_a_refused_submit_runs_nothing(stack, broker_proxy, redis_server):
    broker_proxy.set_mode("reset")
    error = assert_error(httpx.post(f"{stack['patient']}/v1/jobs", json=JOB, timeout=15), 503, mentions="queue")
    assert error["type"] == "service_unavailable"  # down, not busy
    broker_proxy.set_mode("pass")
    time.sleep(3)  # a few outbox sweeps (grace 1 s)
    assert keys_of(redis_server, stack["prefix"], "meta") == []
    assert keys_of(redis_server, stack["prefix"], "events") == []
    assert "started" not in stack["worker"].output()


def test_a_job_whose_task_was_never_sent_is_sent_by_the_outbox_sweep(stack, redis_server):
    # What a gateway that died between storing a job and sending its task leaves behind.
    keys = Keys(stack["prefix"])
    job_id = protocol.new_job_id()

    async def left_behind() -> None:
        client = Redis.from_url(redis_server.url)
        await create_job(client, keys, job_id=job_id, model="demo", ttl_s=600,
                         request={"messages": [{"role": "user", "content": "orphan"}], "params": {"max_tokens": 3}},
                         metadata={})
        await outbox.add(client, keys, job_id)
        await client.aclose()

    asyncio.run(left_behind())
    with Client(stack["patient"]) as client:
        events = list(client.stream(job_id))
        assert events[-1].data["status"] == "succeeded"
        assert client.get(job_id)["attempt"] == 1
