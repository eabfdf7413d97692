"""tokenrelay.core.submit: submit.lua writes what the step-by-step submit writes, or nothing at all."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from dataclasses import replace

from redis.asyncio import Redis

from tokenrelay.core.keys import Keys
from tokenrelay.core.protocol import new_job_id
from tokenrelay.core.settings import Settings
from tokenrelay.core.status import SubmitOutcome
from tokenrelay.core.store import RECENT_JOBS_PER_BUCKET, create_job, load_job
from tokenrelay.core.submit import NewJob, SubmitScript, one_step_possible
from tokenrelay.core.task_message import RedisTaskSender

REQUEST = {"messages": [{"role": "user", "content": "hi"}], "params": {"max_tokens": 3}}
OWNER = "alice"


def settings_for(url: str, **limits) -> Settings:
    return Settings(redis_url=url, retention_s=500, job_timeout_s=100, **limits)


def new_job(keys: Keys, idempotency: tuple[str, str] | None = None) -> NewJob:
    return NewJob(new_job_id(), "demo", REQUEST, {"tag": "t"}, OWNER, f"{keys.prefix}:quota:{OWNER}:active",
                  idempotency)


def run(url: str, scenario, **limits) -> None:
    async def main():
        redis = Redis.from_url(url)
        keys = Keys(f"test{uuid.uuid4().hex}")
        settings = settings_for(url, queue_name=f"{keys.prefix}:queue", **limits)
        try:
            sender = RedisTaskSender(redis, settings.queue_name)
            await scenario(redis, keys, SubmitScript(redis, keys, settings, sender))
        finally:
            await redis.aclose()

    asyncio.run(main())


async def ttl_and_value(redis: Redis, key: str) -> tuple[int, object]:
    kind = (await redis.type(key)).decode()
    value = {"hash": redis.hgetall, "zset": lambda k: redis.zrange(k, 0, -1), "string": redis.get,
             "list": lambda k: redis.lrange(k, 0, -1)}[kind](key)
    return await redis.ttl(key), await value


def test_it_writes_the_record_indexes_and_key_as_create_job_does_and_the_task(redis_server):
    async def scenario(redis, keys, submit):
        job = new_job(keys, idempotency=(keys.idempotency(OWNER, "k1"), "job digest"))
        admitted = await submit(job)
        assert admitted.outcome is SubmitOutcome.ADMITTED
        assert admitted.record == await load_job(redis, keys, job.job_id)

        other = Keys(keys.prefix + "-steps")
        reference = await create_job(redis, other, job_id=job.job_id, model="demo", request=REQUEST,
                                     metadata={"tag": "t"}, ttl_s=600, owner=OWNER)
        ours, theirs = await redis.hgetall(keys.meta(job.job_id)), await redis.hgetall(other.meta(job.job_id))
        assert ours.keys() == theirs.keys()
        assert {k: v for k, v in ours.items() if k != b"created_at"} == \
               {k: v for k, v in theirs.items() if k != b"created_at"}
        assert reference.status == admitted.record.status and reference.request == admitted.record.request
        assert await redis.ttl(keys.meta(job.job_id)) == await redis.ttl(other.meta(job.job_id)) == 600
        for index in (keys.recent(job.job_id), keys.owner_jobs(OWNER)):
            assert await redis.zrange(index, 0, -1) == [job.job_id.encode()]
        assert await redis.ttl(keys.owner_jobs(OWNER)) == await redis.ttl(other.owner_jobs(OWNER)) == 600
        assert await redis.ttl(keys.recent(job.job_id)) == await redis.ttl(other.recent(job.job_id)) == -1
        assert await ttl_and_value(redis, keys.idempotency(OWNER, "k1")) == (600, b"job digest")
        assert await ttl_and_value(redis, job.active_key) == (600, [job.job_id.encode()])

        [message] = await redis.lrange(submit.queue, 0, -1)
        envelope = json.loads(message)
        assert envelope["headers"]["task"] == "tokenrelay.run_job"
        assert envelope["properties"]["delivery_info"]["routing_key"] == submit.queue
        assert json.loads(base64.b64decode(envelope["body"]))[0] == [job.job_id]

    run(redis_server.url, scenario)


def test_refusals_and_a_held_key_write_nothing(redis_server):
    async def scenario(redis, keys, submit):
        first = new_job(keys)
        assert (await submit(first)).outcome is SubmitOutcome.ADMITTED
        before = sorted(await redis.keys(f"{keys.prefix}*"))

        active_full = await submit(new_job(keys))  # max_active_jobs_per_key 1
        assert (active_full.outcome, active_full.record) == (SubmitOutcome.ACTIVE_FULL, None)
        await redis.lpush(submit.queue, "another")  # the queue now holds 2: max_queued_jobs
        queue_full = await submit(new_job(keys))
        assert queue_full.outcome is SubmitOutcome.QUEUE_FULL  # checked before the key's jobs, as step by step
        await redis.lpop(submit.queue)
        await redis.set(keys.idempotency(OWNER, "k"), "earlier digest")
        held = await submit(new_job(keys, idempotency=(keys.idempotency(OWNER, "k"), "mine digest")))
        assert (held.outcome, held.held) == (SubmitOutcome.HELD, b"earlier digest")
        await redis.delete(keys.idempotency(OWNER, "k"))

        assert sorted(await redis.keys(f"{keys.prefix}*")) == before
        assert await redis.zcard(first.active_key) == 1 and await redis.llen(submit.queue) == 1

    run(redis_server.url, scenario, max_active_jobs_per_key=1, max_queued_jobs=2)


def test_the_recent_bucket_is_trimmed_as_create_job_trims_it(redis_server):
    async def scenario(redis, keys, submit):
        job = new_job(keys)
        bucket = keys.recent(job.job_id)
        await redis.zadd(bucket, {f"old{n}": n for n in range(RECENT_JOBS_PER_BUCKET)})
        await submit(job)
        assert await redis.zcard(bucket) == RECENT_JOBS_PER_BUCKET
        assert await redis.zscore(bucket, "old0") is None and await redis.zscore(bucket, job.job_id) is not None

    run(redis_server.url, scenario)


def test_one_step_only_where_the_job_store_is_one_server_and_the_broker():
    assert one_step_possible(Settings(redis_url="redis://h:1/0"))
    assert one_step_possible(Settings(redis_url="unix:///tmp/r.sock?db=0"))
    assert one_step_possible(Settings(redis_url="redis+sentinel://s1:26379,s2:26379/main"))
    assert not one_step_possible(Settings(redis_url="redis://h:1/0", broker_url="redis://h:1/1"))
    assert not one_step_possible(Settings(redis_url="redis://h:1/0", broker_url="amqp://guest@h//"))
    assert not one_step_possible(Settings(redis_url="redis+cluster://h:1,h:2", broker_url="redis://b:1/0"))


def test_a_retry_of_the_same_script_is_admitted_once(redis_server):
    # The client library retries a command whose answer was lost: the script may have run already.
    async def scenario(redis, keys, submit):
        job = new_job(keys, idempotency=(keys.idempotency(OWNER, "k"), "same digest"))
        first, again = await submit(job), await submit(job)
        assert first.outcome is again.outcome is SubmitOutcome.ADMITTED
        assert await redis.zcard(job.active_key) == 1 and await redis.hget(keys.meta(job.job_id), "attempt") == b"0"
        assert await redis.llen(submit.queue) == 1  # the key tells the retry it ran: nothing written again

    run(redis_server.url, scenario)


def test_it_counts_the_request_first_and_refuses_over_the_limit_writing_nothing_else(redis_server):
    async def scenario(redis, keys, submit):
        counter = f"{keys.prefix}:quota:{OWNER}:rpm:1"
        counted = lambda job: replace(job, rate=(counter, 2, 120))  # noqa: E731
        assert (await submit(counted(new_job(keys)))).outcome is SubmitOutcome.ADMITTED
        await redis.set(keys.idempotency(OWNER, "k"), "earlier digest")
        held = await submit(counted(new_job(keys, idempotency=(keys.idempotency(OWNER, "k"), "mine digest"))))
        assert held.outcome is SubmitOutcome.HELD  # a repeat counts as a request too
        assert await ttl_and_value(redis, counter) == (120, b"2")
        before = sorted(await redis.keys(f"{keys.prefix}*"))

        refused = await submit(counted(new_job(keys)))
        assert (refused.outcome, refused.record) == (SubmitOutcome.RATE_LIMITED, None)
        assert sorted(await redis.keys(f"{keys.prefix}*")) == before  # no record, no task, no slot
        assert await redis.get(counter) == b"3" and await redis.llen(submit.queue) == 1
        assert (await submit(new_job(keys))).outcome is SubmitOutcome.ADMITTED  # not counted here: not refused

    run(redis_server.url, scenario)
