"""Scenario 11: Redis out of memory (maxmemory, noeviction): the job fails with a clear error and its
readers get `end`; the gateway keeps serving what it can (finished jobs, health) and refuses new
jobs with a clear 503."""

from __future__ import annotations

import httpx
import redis

from ..support.processes import Stack
from .helpers import readers_mid_stream, record, submit
from .invariants import check_reader

HEADROOM_BYTES = 1_000_000


def test_redis_out_of_memory_fails_the_job_clearly_and_serves_others(own_redis, fault_settings):
    server = own_redis(extra_args=["--maxmemory-policy", "noeviction"])
    settings = {**fault_settings, "max_message_chars": 10_000_000, "max_body_bytes": 10_000_000}
    with Stack(server.url, settings, workers=1) as stack:
        small = submit(stack.url, {"model": "demo", "prompt": "small", "params": {"max_tokens": 5,
                                                                                  "tokens_per_second": 0}})
        before = readers_mid_stream(stack.urls, small, count=1, tokens=0)[0].join()
        admin = redis.Redis.from_url(server.url)
        baseline = admin.info("memory")["used_memory"]
        # The demo model echoes the prompt's words: 2,000 tokens of ~2 KB each, 4 MB in all.
        prompt = " ".join(f"{i:04d}" + "y" * 2000 for i in range(2000))
        big = submit(stack.url, {"model": "demo", "prompt": prompt,
                                 "params": {"max_tokens": 2010, "tokens_per_second": 100}})
        readers = readers_mid_stream(stack.urls, big, count=2, tokens=1)
        # Mid-stream, memory runs out: room for the job's record (it holds the prompt) and 1 MB
        # more, so its stream can never fit, however far the worker got before this line.
        admin.config_set("maxmemory", baseline + len(prompt) + HEADROOM_BYTES)
        for reader in readers:
            summary = check_reader(reader.join(), record(stack.url, big))
            assert summary["status"] == "failed"
            assert summary["errors"] == [{"type": "store_full",
                                          "message": "the job store (Redis) is out of memory; the job was stopped"}]
        assert record(stack.url, big)["error"]["type"] == "store_full"
        # Others are still served: a finished job's stream, health; new work is refused clearly.
        after = httpx.get(f"{stack.url}/v1/jobs/{small}/stream", timeout=10)
        assert after.status_code == 200 and after.text.count("event: ") == len(before)
        assert httpx.get(f"{stack.url}/health").status_code == 200
        # Memory drains once the job stopped and its readers' buffers are freed: keep it full for this
        # check whatever the server frees meanwhile.
        admin.config_set("maxmemory", 1)
        refused = httpx.post(f"{stack.url}/v1/jobs", json={"model": "demo", "prompt": "x"}, timeout=10)
        assert refused.status_code == 503 and "full" in refused.json()["error"]["message"]
        assert "Retry-After" in refused.headers
        # Memory back (an operator raised the limit): new jobs run again.
        admin.config_set("maxmemory", 0)
        new_job = submit(stack.url, {"model": "demo", "prompt": "again", "params": {"max_tokens": 5,
                                                                                    "tokens_per_second": 0}})
        check_reader(readers_mid_stream(stack.urls, new_job, count=1, tokens=0)[0].join(),
                     record(stack.url, new_job))
        admin.close()
