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


class OwnerReads:
    """Counts, with MONITOR, the reads of one job's owner field (what a reader's admission asks Redis)."""

    def __init__(self, url: str, job_id: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.job_id = job_id
        self.count = 0
        self.ready = threading.Event()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        assert self.ready.wait(10)

    def _watch(self) -> None:
        with self.client.monitor() as monitor:
            self.ready.set()
            for entry in monitor.listen():
                command = entry["command"].lower()
                if command.startswith("hget ") and self.job_id in command and "owner" in command:
                    self.count += 1
                if self.done.is_set() and command.startswith("ping"):
                    return

    def stop(self) -> int:
        self.done.set()
        self.client.ping()
        self.thread.join(10)
        return self.count


def test_joins_on_a_relayed_job_ask_redis_nothing_for_admission(stack_settings):
    with EmbeddedServer() as server, Stack(server.url, stack_settings) as stack, Client(stack.url) as client:
        job = client.submit("many joins", params={"max_tokens": 40, "tokens_per_second": 8})  # 5 s: joins land mid-job
        first: list = []
        started = threading.Event()

        def read_first() -> None:
            for event in client.stream(job["id"]):
                first.append(event)
                started.set()

        leader = threading.Thread(target=read_first)
        leader.start()
        assert started.wait(20)
        owner_reads = OwnerReads(server.url, job["id"])
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
        # The one gateway process relays the job to the first reader: nobody else's admission read its owner.
        assert owner_reads.stop() == 0
        assert token_indexes(first) == list(range(40))
        for events in results:
            assert signature(events) == signature(first)
