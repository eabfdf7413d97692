"""Joins that arrive together share one history read (singleflight), against a real Redis."""

from __future__ import annotations

import asyncio
import uuid

import redis
from redis.asyncio import Redis

from api.relay import Relay
from tokenrelay.core.connections import parse_redis_url
from tokenrelay.core.keys import Keys


def _xrange_calls(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return client.info("commandstats").get("cmdstat_xrange", {}).get("calls", 0)
    finally:
        client.close()


def test_concurrent_history_reads_of_one_range_are_one_xrange(redis_server):
    keys = Keys(f"tokenrelay-joins-{uuid.uuid4().hex[:8]}")
    job_id = uuid.uuid4().hex
    key = keys.events(job_id)
    setup = redis.Redis.from_url(redis_server.url)
    for seq in range(1, 31):
        setup.xadd(key, {"e": "token", "d": f'{{"text": "t{seq}", "index": {seq - 1}}}'}, id=f"1-{seq}")
    setup.close()

    async def join_many() -> list:
        client = Redis.from_url(redis_server.url)
        relay = Relay(client, parse_redis_url(redis_server.url), keys, history_batch=1000, client_buffer_events=100,
                      keepalive_s=15)
        try:
            before = _xrange_calls(redis_server.url)
            results = await asyncio.gather(*(relay.history._xrange(key.encode(), "-", "+") for _ in range(50)))
            return results, _xrange_calls(redis_server.url) - before
        finally:
            await client.aclose()

    results, calls = asyncio.run(join_many())
    assert calls == 1
    assert all(len(entries) == 30 for entries in results)
    assert [entry[0] for entry in results[0]] == [f"1-{seq}".encode() for seq in range(1, 31)]
