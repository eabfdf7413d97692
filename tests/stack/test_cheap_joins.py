"""Readers joining a job this gateway already relays are admitted without a Redis round trip, and
read the same sequence as the first reader."""

from __future__ import annotations

import threading

import redis

from tokenrelay import Client
from tokenrelay.cli.embedded import EmbeddedServer

from ..support.processes import Stack, wait_until
from ..support.streams import signature, token_indexes

READERS = 20


def _calls(client: redis.Redis, command: str) -> int:
    return client.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0)


def test_joins_on_a_relayed_job_ask_redis_nothing_for_admission(stack_settings):
    with EmbeddedServer() as server, Stack(server.url, stack_settings) as stack, Client(stack.url) as client:
        probe = redis.Redis.from_url(server.url)
        job = client.submit("many joins", params={"max_tokens": 40, "tokens_per_second": 20})
        first: list = []
        started = threading.Event()

        def read_first() -> None:
            for event in client.stream(job["id"]):
                first.append(event)
                started.set()

        leader = threading.Thread(target=read_first)
        leader.start()
        assert started.wait(20)
        hmget_before = _calls(probe, "hmget")
        results: list[list] = [[] for _ in range(READERS)]

        def read(number: int) -> None:
            with Client(stack.url) as reader:
                results[number].extend(reader.stream(job["id"]))

        threads = [threading.Thread(target=read, args=(n,)) for n in range(READERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        leader.join(30)
        # The one gateway process relays the job to the first reader: nobody else's admission read its record.
        assert _calls(probe, "hmget") == hmget_before
        assert token_indexes(first) == list(range(40))
        for events in results:
            assert signature(events) == signature(first)
        probe.close()
