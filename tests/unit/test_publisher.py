"""worker.publisher.StreamPublisher against a real server: batching, ids, fencing, retries."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from tokenrelay.core import protocol
from tokenrelay.core.keys import Keys
from tokenrelay.core.protocol import new_job_id
from tokenrelay.events import Event
from worker.publisher import StreamPublisher

RUNNING_TTL_S = 600


@contextlib.asynccontextmanager
async def running_publisher(url: str):
    redis = Redis.from_url(url)
    keys = Keys(f"test{uuid.uuid4().hex}")
    publisher = StreamPublisher(redis, keys, running_ttl_s=RUNNING_TTL_S)
    publisher.start()
    try:
        yield publisher
    finally:
        await publisher.stop()
        async for key in redis.scan_iter(match=f"{keys.prefix}:*"):
            await redis.delete(key)
        await redis.aclose()


def run(url: str, scenario) -> None:
    async def main():
        async with running_publisher(url) as publisher:
            await scenario(publisher)

    asyncio.run(main())


async def entries(publisher: StreamPublisher, job_id: str) -> list[tuple[str, str, dict]]:
    raw = await publisher.redis.xrange(publisher.keys.events(job_id))
    return [(i.decode(), f[b"e"].decode(), json.loads(f[b"d"])) for i, f in raw]


async def flushed(stream, timeout_s: float = 5.0) -> bool:
    try:
        await asyncio.wait_for(stream.flushed(), timeout_s)
        return True
    except TimeoutError:
        return False


def token(text: str, index: int) -> Event:
    return Event(protocol.TOKEN, {"text": text, "index": index})


def test_fast_tokens_are_merged_ids_are_sequential_and_all_is_flushed(redis_server):
    async def scenario(publisher):
        job_id, lost = new_job_id(), []
        stream = publisher.open(job_id, 3, lost.append)
        texts = [f" w{i}" for i in range(200)]
        for burst in range(5):  # each burst waits for Redis, so there are at least 5 writes
            for i in range(burst * 40, burst * 40 + 40):
                stream.emit(token(texts[i], i))
                if i % 7 == 0:
                    await asyncio.sleep(0)  # let the writer cut a batch now and then
            assert await flushed(stream)
        written = await entries(publisher, job_id)
        assert lost == []
        assert 5 <= len(written) < 100
        assert [i for i, _, _ in written] == [f"3-{n}" for n in range(len(written))]
        assert all(e == "token" for _, e, _ in written)
        assert "".join(d["text"] for _, _, d in written) == "".join(texts)
        counts = [d.get("count", 1) for _, _, d in written]
        assert sum(counts) == 200
        # Each entry keeps the index of its first token.
        assert [d["index"] for _, _, d in written] == [sum(counts[:n]) for n in range(len(counts))]

    run(redis_server.url, scenario)


def test_other_events_keep_their_place_and_are_never_merged(redis_server):
    async def scenario(publisher):
        job_id = new_job_id()
        stream = publisher.open(job_id, 1, lambda reason: None)
        stream.emit(Event(protocol.METADATA, {"job_id": job_id, "attempt": 1, "model": "demo"}))
        stream.emit(token("a", 0))
        stream.emit(token("b", 1))
        stream.emit(Event(protocol.ERROR, {"type": "internal_error", "message": "m"}))
        stream.emit(Event(protocol.TOKEN, {"text": "c", "index": 2, "channel": "x"}))  # other fields: own entry
        stream.emit(token("d", 3))
        assert await flushed(stream)
        written = await entries(publisher, job_id)
        assert [(i, e) for i, e, _ in written] == [
            ("1-0", "metadata"), ("1-1", "token"), ("1-2", "error"), ("1-3", "token"), ("1-4", "token")]
        assert written[1][2] == {"text": "ab", "index": 0, "count": 2}
        assert written[3][2] == {"text": "c", "index": 2, "channel": "x"}
        ttl = await publisher.redis.ttl(publisher.keys.events(job_id))
        assert 0 < ttl <= RUNNING_TTL_S

    run(redis_server.url, scenario)


def test_reserved_id_follows_the_written_ones(redis_server):
    async def scenario(publisher):
        stream = publisher.open(new_job_id(), 2, lambda reason: None)
        stream.emit(token("x", 0))
        assert await flushed(stream)
        stream.emit(token("y", 1))
        assert await flushed(stream)
        assert stream.reserve_id() == "2-2"

    run(redis_server.url, scenario)


def test_newer_attempt_fences_out_the_older_one(redis_server):
    async def scenario(publisher):
        job_id, lost1, lost2 = new_job_id(), [], []
        first = publisher.open(job_id, 1, lost1.append)
        first.emit(token("old", 0))
        assert await flushed(first)
        second = publisher.open(job_id, 2, lost2.append)
        second.emit(Event(protocol.RESET, {"attempt": 2, "reason": "worker_lost"}))
        second.emit(token("new", 0))
        assert await flushed(second)

        first.emit(token("late", 1))  # the old attempt is still running somewhere
        assert await flushed(first)  # it must not hang
        assert lost1 == ["superseded"] and first.lost_reason == "superseded"
        first.emit(token("later", 2))  # ignored from now on
        second.emit(token(" more", 1))
        assert await flushed(second) and await flushed(first)

        written = await entries(publisher, job_id)
        assert [i for i, _, _ in written] == ["1-0", "2-0", "2-1", "2-2"]
        assert [d.get("text") for _, _, d in written] == ["old", None, "new", " more"]
        assert lost2 == []

    run(redis_server.url, scenario)


def test_one_superseded_job_does_not_disturb_others_in_the_same_write(redis_server):
    async def scenario(publisher):
        jobs = [new_job_id() for _ in range(3)]
        # The middle job already has an entry of attempt 2 (a newer worker took it over).
        await publisher.redis.xadd(publisher.keys.events(jobs[1]), {"e": "reset", "d": "{}"}, id="2-0")
        lost = {job_id: [] for job_id in jobs}
        streams = [publisher.open(job_id, 1, lost[job_id].append) for job_id in jobs]
        for n, stream in enumerate(streams):  # no await in between: one pipeline for all three
            stream.emit(token(f"j{n}", 0))
            stream.emit(Event(protocol.METADATA, {"n": n}))
        for stream in streams:
            assert await flushed(stream)
        assert lost == {jobs[0]: [], jobs[1]: ["superseded"], jobs[2]: []}
        for n in (0, 2):
            assert [(i, e) for i, e, _ in await entries(publisher, jobs[n])] == [("1-0", "token"), ("1-1", "metadata")]
        assert [i for i, _, _ in await entries(publisher, jobs[1])] == ["2-0"]

    run(redis_server.url, scenario)


def test_retried_write_whose_first_try_landed_does_not_duplicate(redis_server):
    async def scenario(publisher):
        real_pipeline, calls = publisher._pipeline, []

        async def reply_lost_once(batches):
            results = await real_pipeline(batches)
            calls.append(len(batches))
            if len(calls) == 1:
                raise RedisConnectionError("connection reset after the write was applied")
            return results

        publisher._pipeline = reply_lost_once
        job_id, lost = new_job_id(), []
        stream = publisher.open(job_id, 1, lost.append)
        stream.emit(Event(protocol.METADATA, {"attempt": 1}))
        stream.emit(token("a", 0))
        assert await flushed(stream)
        assert len(calls) == 2  # the first try "failed" and was retried
        stream.emit(token("b", 1))
        assert await flushed(stream)
        written = await entries(publisher, job_id)
        assert lost == []
        assert [(i, d.get("text")) for i, _, d in written] == [("1-0", None), ("1-1", "a"), ("1-2", "b")]

    run(redis_server.url, scenario)


def test_entry_already_written_under_the_same_id_is_not_duplicated(redis_server):
    async def scenario(publisher):
        job_id, lost = new_job_id(), []
        fields = protocol.encode_fields(protocol.TOKEN, {"text": "a", "index": 0})
        await publisher.redis.xadd(publisher.keys.events(job_id), fields, id="1-0")
        stream = publisher.open(job_id, 1, lost.append)
        stream.emit(token("a", 0))
        assert await flushed(stream)
        assert lost == []
        assert [(i, d["text"]) for i, _, d in await entries(publisher, job_id)] == [("1-0", "a")]

    run(redis_server.url, scenario)


def test_refused_write_fails_the_job_without_hanging(redis_server):
    async def scenario(publisher):
        job_id, lost = new_job_id(), []
        await publisher.redis.set(publisher.keys.events(job_id), "not a stream")
        stream = publisher.open(job_id, 1, lost.append)
        stream.emit(token("a", 0))
        assert await flushed(stream)
        assert lost == ["write_failed"]

    run(redis_server.url, scenario)


def test_unencodable_token_does_not_stop_the_publisher_for_other_jobs(redis_server):
    # A token redis-py cannot encode (a lone surrogate) must fail its own job, not the publisher.
    async def scenario(publisher):
        lost = []
        bad = publisher.open(new_job_id(), 1, lost.append)
        bad.emit(token("\ud83d", 0))
        bad_settled = await flushed(bad, 1.0)
        good_id = new_job_id()
        good = publisher.open(good_id, 1, lambda reason: None)
        good.emit(token("fine", 0))
        assert await flushed(good, 2.0), "publisher stopped writing for every job after one bad token"
        assert [(i, d["text"]) for i, _, d in await entries(publisher, good_id)] == [("1-0", "fine")]
        assert bad_settled and (lost == ["write_failed"] or lost == [])

    run(redis_server.url, scenario)


def test_a_stream_that_lost_acknowledged_entries_fails_the_job(redis_server):
    # What a failover does when the old primary acknowledged writes it never sent to its replica: the
    # write that finds the hole still lands, and the job stops there (its `error` and `end` follow).
    async def scenario(publisher):
        job_id, lost = new_job_id(), []
        stream = publisher.open(job_id, 1, lost.append)
        for index in range(3):
            stream.emit(token(f"t{index}", index))
            assert await flushed(stream)
        key = publisher.keys.events(job_id)
        await publisher.redis.xdel(key, "1-1", "1-2")  # the new primary never had them
        stream.emit(token("t3", 3))
        assert await flushed(stream)
        assert lost == ["store_lost"] and stream.lost_reason == "store_lost"
        assert [i for i, _, _ in await entries(publisher, job_id)] == ["1-0", "1-3"]
        stream.emit(token("t4", 4))  # nothing more from this attempt
        assert await flushed(stream)
        assert [i for i, _, _ in await entries(publisher, job_id)] == ["1-0", "1-3"]

    run(redis_server.url, scenario)


def test_a_server_that_lost_the_script_gets_it_again(redis_server):
    async def scenario(publisher):
        job_id, lost = new_job_id(), []
        stream = publisher.open(job_id, 1, lost.append)
        stream.emit(token("a", 0))
        assert await flushed(stream)
        await publisher.redis.script_flush()  # a restarted server or a new primary: no scripts
        stream.emit(token("b", 1))
        assert await flushed(stream)
        assert lost == [] and [d["text"] for _, _, d in await entries(publisher, job_id)] == ["a", "b"]

    run(redis_server.url, scenario)


def test_writes_are_retried_for_write_retry_s_while_redis_does_not_answer():
    # A failover takes seconds: the publisher keeps trying that long before it fails the jobs.
    def total(**options) -> float:
        return sum(StreamPublisher(None, Keys("t"), running_ttl_s=1, **options)._retry_delays())

    assert 28 <= total(write_retry_s=30) <= 30
    assert 3 <= total() <= 4  # at least the quick schedule, whatever the setting
