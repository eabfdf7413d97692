"""Prometheus metrics of the gateway (`/metrics`) and of a worker (its metrics port), read the way
Prometheus reads them, from a running stack."""

from __future__ import annotations

import asyncio
import threading

from redis.asyncio import Redis

from api.metrics import GatewayMetrics
from api.relay import Relay
from tokenrelay import Client
from tokenrelay.cli.embedded import free_port
from tokenrelay.core.connections import parse_redis_url
from tokenrelay.core.keys import Keys
from tokenrelay.core.protocol import encode_fields, new_job_id

from ..support.metrics import scrape, scrape_until, value
from ..support.processes import Stack


def test_gateway_counts_jobs_tokens_and_readers(client: Client, gateway_url: str):
    before = scrape(f"{gateway_url}/metrics")
    job = client.submit("metrics", params={"max_tokens": 30, "tokens_per_second": 30})
    stream_open = threading.Event()
    events = []

    def read():
        for event in client.stream(job["id"]):
            stream_open.set()
            events.append(event)

    reader = threading.Thread(target=read)
    reader.start()
    assert stream_open.wait(10)
    during = scrape_until(f"{gateway_url}/metrics", lambda s: value(s, "tokenrelay_active_readers") >= 1,
                          "an active reader")
    assert value(during, "tokenrelay_active_streams") >= 1
    assert value(during, "tokenrelay_jobs", status="running") >= 1
    reader.join(20)
    after = scrape(f"{gateway_url}/metrics")
    token_events = len([e for e in events if e.event == "token"])
    assert value(after, "tokenrelay_jobs_submitted_total", model="demo") - \
        value(before, "tokenrelay_jobs_submitted_total", model="demo") == 1
    assert value(after, "tokenrelay_token_events_relayed_total") - \
        value(before, "tokenrelay_token_events_relayed_total") == token_events
    assert value(after, "tokenrelay_active_readers") == 0
    assert value(after, "tokenrelay_workers_alive") >= 1


def test_queue_depth_and_worker_metrics(redis_server, isolated_settings):
    port = free_port()
    with Stack(redis_server.url, {**isolated_settings, "worker_metrics_port": port}, workers=0) as stack:
        with Client(stack.url) as client:
            waiting = [client.submit("queued", params={"max_tokens": 3, "tokens_per_second": 0}) for _ in range(3)]
            samples = scrape(f"{stack.url}/metrics")
            assert value(samples, "tokenrelay_queue_depth") == 3
            assert value(samples, "tokenrelay_jobs", status="queued") == 3
            stack.add_worker()
            for job in waiting:
                list(client.stream(job["id"]))
            slow = client.submit("stop me", params={"max_tokens": 1000, "tokens_per_second": 50})
            for event in client.stream(slow["id"]):
                if event.event == "token":
                    client.cancel(slow["id"])
        worker_url = f"http://127.0.0.1:{port}/metrics"
        samples = scrape_until(worker_url, lambda s: value(s, "tokenrelay_worker_jobs_total", status="cancelled") == 1,
                               "the cancelled job counted")
        assert value(samples, "tokenrelay_worker_jobs_total", status="succeeded") == 3
        assert value(samples, "tokenrelay_time_to_first_token_seconds_count") == 4
        assert value(samples, "tokenrelay_job_duration_seconds_count", status="succeeded") == 3
        assert value(samples, "tokenrelay_job_duration_seconds_count", status="cancelled") == 1
        assert value(samples, "tokenrelay_tokens_generated_total") >= 9
        assert value(samples, "tokenrelay_worker_running_jobs") == 0
        assert value(scrape(f"{stack.url}/metrics"), "tokenrelay_queue_depth") == 0


def test_slow_reader_disconnects_are_counted(redis_server):
    """A reader that stops reading is cut off by the relay once its buffer is full; the cut is counted."""

    async def scenario() -> tuple[float, list[bytes]]:
        keys = Keys("tokenrelay-metrics-test")
        redis = Redis.from_url(redis_server.url)
        metrics = GatewayMetrics()
        relay = Relay(redis, parse_redis_url(redis_server.url), keys, history_batch=100, client_buffer_events=5,
                      keepalive_s=5, hooks=metrics.relay_hooks())
        await relay.start()
        job_id = new_job_id()
        stream_key = keys.events(job_id)
        await redis.xadd(stream_key, encode_fields("metadata", {"job_id": job_id}), id="1-0")
        follower = relay.follow(job_id, None)
        chunks = [await follower.__anext__()]  # history; the reader is paused before it joins the hub
        for seq in range(1, 50):  # published while the reader does not read
            await redis.xadd(stream_key, encode_fields("token", {"text": "x", "index": seq - 1}), id=f"1-{seq}")
        chunks += [chunk async for chunk in follower]
        await relay.stop()
        await redis.delete(stream_key)
        await redis.aclose()
        return metrics.slow_reader_disconnects._value.get(), chunks

    disconnects, chunks = asyncio.run(scenario())
    assert disconnects == 1
    assert b"event: end" not in b"".join(chunks)
