"""A worker whose job store does not answer when it starts (a failover, a restart) runs jobs once it does."""

from __future__ import annotations

import asyncio
import uuid

from redis.asyncio import Redis

from tokenrelay.core.keys import Keys
from tokenrelay.core.protocol import new_job_id
from tokenrelay.core.settings import Settings
from tokenrelay.core.store import create_job, load_job
from worker.celery_app import create_worker_app

from .proxy import FaultProxy


def _new_job(url: str, keys: Keys) -> str:
    async def create() -> str:
        redis = Redis.from_url(url)
        try:
            job_id = new_job_id()
            await create_job(redis, keys, job_id=job_id, model="demo", metadata={}, ttl_s=600,
                             request={"messages": [{"role": "user", "content": "hi"}], "params": {"max_tokens": 3}})
            return job_id
        finally:
            await redis.aclose()

    return asyncio.run(create())


def _status(url: str, keys: Keys, job_id: str) -> str:
    async def read() -> str:
        redis = Redis.from_url(url)
        try:
            return (await load_job(redis, keys, job_id)).status
        finally:
            await redis.aclose()

    return asyncio.run(read())


def test_a_runtime_that_could_not_start_is_started_again_by_the_next_job(redis_server):
    name = f"w{uuid.uuid4().hex[:8]}"
    with FaultProxy(redis_server.port) as proxy:
        settings = Settings(redis_url=proxy.url, broker_url=redis_server.url, key_prefix=f"tokenrelay-{name}",
                            queue_name=f"tokenrelay-{name}", lease_ttl_s=2)
        keys = Keys(settings.key_prefix)
        holder = create_worker_app(settings).tokenrelay_runtime
        proxy.set_mode("reset")
        try:
            holder.get()
            raise AssertionError("the runtime started without its job store")
        except Exception as exc:  # noqa: BLE001 - what a start against a refusing server raises
            assert "Connection" in type(exc).__name__, exc
        proxy.set_mode("pass")
        job_id = _new_job(redis_server.url, keys)
        try:
            assert holder.get().run_job(job_id) == "succeeded"
            assert _status(redis_server.url, keys, job_id) == "succeeded"
        finally:
            holder.close()
