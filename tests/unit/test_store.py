"""tokenrelay.core.store: job records and the atomic attempt lifecycle, against a real server."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

from redis.asyncio import Redis

from tokenrelay.core import protocol
from tokenrelay.core.keys import Keys
from tokenrelay.core.protocol import new_job_id
from tokenrelay.core.status import FinishOutcome
from tokenrelay.core.store import JobScripts, create_job, load_job

TTL_S = 600
LONG_LEASE_MS = 60_000


class Store:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis, self.keys, self.scripts = redis, keys, JobScripts(redis, keys)

    async def new_job(self, **request) -> str:
        job_id = new_job_id()
        await create_job(self.redis, self.keys, job_id=job_id, model="demo",
                         request={"messages": [{"role": "user", "content": "hi"}], **request},
                         metadata={"tag": "t"}, ttl_s=TTL_S)
        return job_id

    async def events(self, job_id: str) -> list[tuple[str, str, dict]]:
        raw = await self.redis.xrange(self.keys.events(job_id))
        return [(i.decode(), f[b"e"].decode(), json.loads(f[b"d"])) for i, f in raw]

    async def start_after_lease_expires(self, job_id: str) -> tuple[str, int]:
        deadline = time.monotonic() + 5
        while (result := await self.scripts.start(job_id, LONG_LEASE_MS, TTL_S))[0] == "busy":
            assert time.monotonic() < deadline, "lease never expired"
            await asyncio.sleep(0.01)
        return result

    async def lease_gone(self, job_id: str) -> None:
        deadline = time.monotonic() + 5
        while await self.redis.exists(self.keys.lease(job_id)):
            assert time.monotonic() < deadline, "lease never expired"
            await asyncio.sleep(0.01)

    async def server_ms(self) -> int:
        seconds, micros = await self.redis.time()
        return seconds * 1000 + micros // 1000


def run(url: str, scenario) -> None:
    async def main():
        redis = Redis.from_url(url)
        keys = Keys(f"test{uuid.uuid4().hex}")
        try:
            await scenario(Store(redis, keys))
        finally:
            async for key in redis.scan_iter(match=f"{keys.prefix}:*"):
                await redis.delete(key)
            await redis.aclose()

    asyncio.run(main())


def finish_fields(status: str = "succeeded") -> dict[str, str]:
    return {"status": status, "output_text": "hello", "finish_reason": "stop", "finished_at": "2024-01-01T00:00:00Z"}


def test_create_and_load(redis_server):
    async def scenario(store):
        job_id = await store.new_job()
        record = await load_job(store.redis, store.keys, job_id)
        assert (record.id, record.status, record.model, record.attempt) == (job_id, "queued", "demo", 0)
        assert record.request["messages"] == [{"role": "user", "content": "hi"}]
        assert record.metadata == {"tag": "t"}
        assert not record.finished and not record.cancel_requested
        assert 0 < await store.redis.ttl(store.keys.meta(job_id)) <= TTL_S
        assert await load_job(store.redis, store.keys, new_job_id()) is None

    run(redis_server.url, scenario)


def test_start_takes_a_lease_and_a_second_start_is_busy(redis_server):
    async def scenario(store):
        job_id = await store.new_job()
        assert await store.scripts.start(job_id, LONG_LEASE_MS, TTL_S) == ("started", 1)
        assert await store.scripts.start(job_id, LONG_LEASE_MS, TTL_S) == ("busy", 0)
        record = await load_job(store.redis, store.keys, job_id)
        assert (record.status, record.attempt) == ("running", 1) and record.started_at
        assert await store.scripts.start(new_job_id(), LONG_LEASE_MS, TTL_S) == ("missing", 0)

    run(redis_server.url, scenario)


def test_begin_lists_the_job_as_running_names_the_worker_and_returns_the_record(redis_server):
    async def scenario(store):
        job_id = await store.new_job()
        started, record = await store.scripts.begin(job_id, "host:1", 5_000, LONG_LEASE_MS, TTL_S)
        assert started == ("started", 1)
        assert (record.id, record.status, record.attempt) == (job_id, "running", 1)
        assert await store.redis.hget(store.keys.meta(job_id), "worker") == b"host:1"
        assert record.request["messages"] == [{"role": "user", "content": "hi"}] and record.metadata == {"tag": "t"}
        assert await store.redis.zscore(store.keys.running(job_id), job_id) == 5_000
        # Another worker: the live lease keeps it off, the record stays its first worker's.
        assert await store.scripts.begin(job_id, "host:2", 6_000, LONG_LEASE_MS, TTL_S) == (("busy", 0), None)
        assert await store.redis.hget(store.keys.meta(job_id), "worker") == b"host:1"
        assert await store.scripts.begin(new_job_id(), "host:1", 5_000, LONG_LEASE_MS, TTL_S) == (("missing", 0), None)

    run(redis_server.url, scenario)


def test_start_after_the_lease_expired_is_a_new_attempt(redis_server):
    async def scenario(store):
        job_id = await store.new_job()
        assert await store.scripts.start(job_id, 50, TTL_S) == ("started", 1)
        assert await store.start_after_lease_expires(job_id) == ("started", 2)
        assert (await load_job(store.redis, store.keys, job_id)).attempt == 2

    run(redis_server.url, scenario)


def test_cancel_a_queued_job_ends_it_at_once(redis_server):
    async def scenario(store):
        job_id = await store.new_job()
        assert await store.scripts.cancel(job_id, TTL_S) == ("cancelled", "cancelled")
        events = await store.events(job_id)
        assert [(i, e, d["status"], d["finish_reason"]) for i, e, d in events] == [("1-0", "end", "cancelled", "cancelled")]
        record = await load_job(store.redis, store.keys, job_id)
        assert (record.status, record.finish_reason, record.cancel_requested) == ("cancelled", "cancelled", True)
        assert record.finished and record.finished_at
        assert await store.scripts.start(job_id, LONG_LEASE_MS, TTL_S) == ("finished", 0)
        assert await store.scripts.cancel(job_id, TTL_S) == ("finished", "cancelled")
        assert len(await store.events(job_id)) == 1
        assert await store.scripts.cancel(new_job_id(), TTL_S) == ("missing", None)

    run(redis_server.url, scenario)


def test_cancel_a_running_job_asks_its_worker(redis_server):
    async def scenario(store):
        job_id = await store.new_job()
        await store.scripts.start(job_id, 50, TTL_S)
        assert await store.scripts.cancel(job_id, TTL_S) == ("cancelling", "running")
        record = await load_job(store.redis, store.keys, job_id)
        assert (record.status, record.cancel_requested) == ("running", True)
        assert await store.events(job_id) == []  # the worker writes the end
        # A worker that picks the job up again learns at once that it must cancel.
        assert await store.start_after_lease_expires(job_id) == ("cancel", 2)

    run(redis_server.url, scenario)


def test_finish_writes_end_and_record_once(redis_server):
    async def scenario(store):
        job_id = await store.new_job()
        await store.scripts.start(job_id, LONG_LEASE_MS, TTL_S)
        end = protocol.dumps({"status": "succeeded"})
        assert await store.scripts.finish(job_id, 1, "1-3", end, TTL_S, finish_fields()) == FinishOutcome.WRITTEN
        again = await store.scripts.finish(job_id, 1, "1-4", end, TTL_S, finish_fields("failed"))
        assert again == FinishOutcome.ALREADY_FINISHED
        assert await store.events(job_id) == [("1-3", "end", {"status": "succeeded"})]
        record = await load_job(store.redis, store.keys, job_id)
        assert (record.status, record.output_text, record.finish_reason) == ("succeeded", "hello", "stop")
        assert not await store.redis.exists(store.keys.lease(job_id))
        assert await store.scripts.cancel(job_id, TTL_S) == ("finished", "succeeded")
        assert await store.scripts.start(job_id, LONG_LEASE_MS, TTL_S) == ("finished", 0)

    run(redis_server.url, scenario)


def test_finish_by_a_superseded_attempt_writes_nothing(redis_server):
    async def scenario(store):
        job_id = await store.new_job()
        await store.scripts.start(job_id, 50, TTL_S)
        assert await store.start_after_lease_expires(job_id) == ("started", 2)
        end = protocol.dumps({"status": "succeeded"})
        assert await store.scripts.finish(job_id, 1, "1-7", end, TTL_S, finish_fields()) == FinishOutcome.SUPERSEDED
        assert await store.events(job_id) == []
        record = await load_job(store.redis, store.keys, job_id)
        assert (record.status, record.attempt, record.output_text) == ("running", 2, None)
        assert await store.scripts.finish(job_id, 2, "2-0", end, TTL_S, finish_fields()) == FinishOutcome.WRITTEN
        assert await store.scripts.finish(new_job_id(), 1, "1-0", end, TTL_S, finish_fields()) == FinishOutcome.SUPERSEDED

    run(redis_server.url, scenario)


def test_claim_lost_goes_to_exactly_one_caller(redis_server):
    async def scenario(store):
        job_id = await store.new_job()
        await store.scripts.start(job_id, 200, TTL_S)
        assert await store.scripts.claim_lost(job_id) == "alive"
        await store.lease_gone(job_id)
        claims = await asyncio.gather(*(store.scripts.claim_lost(job_id) for _ in range(2)))
        assert sorted(claims) == ["claimed", "idle"]
        assert (await load_job(store.redis, store.keys, job_id)).status == "queued"
        assert await store.scripts.claim_lost(job_id) == "idle"
        assert await store.scripts.start(job_id, LONG_LEASE_MS, TTL_S) == ("started", 2)

    run(redis_server.url, scenario)


def test_claim_lost_skips_a_job_that_is_no_longer_running(redis_server):
    async def scenario(store):
        job_id = await store.new_job()
        await store.scripts.start(job_id, 100, TTL_S)
        await store.redis.hset(store.keys.meta(job_id), "status", "succeeded")
        await store.lease_gone(job_id)
        assert await store.scripts.claim_lost(job_id) == "idle"
        assert (await load_job(store.redis, store.keys, job_id)).status == "succeeded"

    run(redis_server.url, scenario)


def test_renew_keeps_only_the_current_attempts_lease(redis_server):
    async def scenario(store):
        job_id = await store.new_job()
        await store.scripts.start(job_id, 300, TTL_S)
        assert await store.scripts.renew({job_id: 1}, LONG_LEASE_MS) == {job_id: True}
        assert await store.redis.pttl(store.keys.lease(job_id)) > 10_000
        assert await store.scripts.renew({job_id: 0}, LONG_LEASE_MS) == {job_id: False}  # not its attempt
        # A heartbeat late enough for the lease to run out takes it again while nobody claimed the job.
        await store.redis.delete(store.keys.lease(job_id))
        assert await store.scripts.renew({job_id: 1}, LONG_LEASE_MS) == {job_id: True}
        assert await store.scripts.start(job_id, LONG_LEASE_MS, TTL_S) == ("busy", 0)
        # Once claimed (queued again), the old attempt cannot take it back.
        await store.redis.delete(store.keys.lease(job_id))
        assert await store.scripts.claim_lost(job_id) == "claimed"
        assert await store.scripts.renew({job_id: 1}, LONG_LEASE_MS) == {job_id: False}

    run(redis_server.url, scenario)


def test_running_index_entries_are_dropped_only_if_unchanged(redis_server):
    async def scenario(store):
        job_id = await store.new_job()
        bucket = store.keys.running(job_id)
        await store.scripts.track([job_id], 1_000)
        await store.scripts.track([job_id], 2_000)  # a new attempt's worker tracked it again
        await store.scripts.untrack(job_id, 1_000)  # a reaper that saw the old entry
        assert await store.redis.zscore(bucket, job_id) == 2_000
        await store.scripts.untrack(job_id, 2_000)
        assert await store.redis.zscore(bucket, job_id) is None
        assert bucket in store.keys.running_buckets

    run(redis_server.url, scenario)
