"""A plain Celery worker runs jobs whose task the gateway LPUSHed itself (no kombu on the gateway)."""

from __future__ import annotations

import base64
import json

import redis

from tokenrelay import Client

from ..support.processes import Stack, wait_for_workers
from ..support.streams import token_indexes


def test_a_celery_worker_runs_jobs_sent_with_one_lpush(redis_server, isolated_settings):
    queue = isolated_settings["queue_name"]
    direct = redis.Redis.from_url(redis_server.url)
    with Stack(redis_server.url, isolated_settings, workers=0) as stack, Client(stack.url) as client:
        jobs = [client.submit(f"queued {n}", params={"max_tokens": 12, "tokens_per_second": 0}) for n in range(3)]
        # No worker yet: the three tasks wait on the queue, as the gateway wrote them.
        waiting = [json.loads(raw) for raw in direct.lrange(queue, 0, -1)]
        assert len(waiting) == 3
        assert {json.loads(base64.b64decode(m["body"]))[0][0] for m in waiting} == {job["id"] for job in jobs}
        assert all(m["properties"]["reply_to"] == "" for m in waiting)  # ours, not kombu's
        stack.add_worker()
        wait_for_workers(stack.url, 1)
        for job in jobs:
            events = list(client.stream(job["id"]))
            assert token_indexes(events) == list(range(12))
            assert events[-1].event == "end" and events[-1].data["status"] == "succeeded"
        assert direct.llen(queue) == 0
    direct.close()
