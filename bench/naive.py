"""The `naive relay` baseline, as most "Celery + Redis streaming" examples build it: the worker PUBLISHes
each token, and every HTTP reader opens its own pub/sub subscription. Tokens published before a reader
subscribed are lost to it; nothing can be replayed."""

from __future__ import annotations

import json
import os
import time

CHANNEL = "naive:{}"


def redis_url() -> str:
    return os.environ["NAIVE_REDIS_URL"]


# -- the worker ---------------------------------------------------------------------------------------

def create_celery():
    import redis
    from celery import Celery
    from langchain_core.messages import HumanMessage

    from tokenrelay.engine.demo import DemoChatModel

    app = Celery("naive", broker=redis_url())
    app.conf.update(task_serializer="json", accept_content=["json"], task_ignore_result=True,
                    task_default_queue="naive", worker_prefetch_multiplier=1)
    client = redis.Redis.from_url(redis_url(), max_connections=1000)

    @app.task(name="naive.run")
    def run(job_id: str, max_tokens: int, tps: float) -> None:
        channel = CHANNEL.format(job_id)
        model = DemoChatModel(max_tokens=max_tokens, tokens_per_second=tps)
        index = 0
        for chunk in model.stream([HumanMessage(content="bench")]):
            if chunk.content:
                client.publish(channel, json.dumps({"e": "token", "text": chunk.content, "index": index,
                                                    "ts": time.time()}))
                index += 1
        client.publish(channel, json.dumps({"e": "end", "status": "succeeded"}))

    return app


def __getattr__(name: str):
    if name == "app":
        global app
        app = create_celery()
        return app
    raise AttributeError(name)


# -- the gateway --------------------------------------------------------------------------------------

def create_gateway():
    import uuid

    import redis.asyncio as aioredis
    from celery import Celery
    from fastapi import FastAPI
    from fastapi.responses import StreamingResponse

    gateway = FastAPI()
    producer = Celery("naive", broker=redis_url())
    producer.conf.update(task_serializer="json", task_default_queue="naive")
    client = aioredis.Redis.from_url(redis_url(), max_connections=100_000)

    async def relay(job_id: str, submit: dict | None):
        pubsub = client.pubsub(ignore_subscribe_messages=True)  # one connection per reader
        await pubsub.subscribe(CHANNEL.format(job_id))
        try:
            if submit is not None:
                producer.send_task("naive.run", args=[job_id, submit["max_tokens"], submit["tps"]])
            async for message in pubsub.listen():
                payload = json.loads(message["data"])
                kind = payload.pop("e")
                yield f"event: {kind}\ndata: {json.dumps(payload)}\n\n"
                if kind == "end":
                    return
        finally:
            await pubsub.aclose()

    @gateway.get("/run")
    async def run(max_tokens: int = 64, tps: float = 0.0) -> StreamingResponse:
        """Subscribe, then submit, then relay: the order these examples need to lose nothing."""
        return StreamingResponse(relay(uuid.uuid4().hex, {"max_tokens": max_tokens, "tps": tps}),
                                 media_type="text/event-stream")

    @gateway.get("/stream/{job_id}")
    async def stream(job_id: str) -> StreamingResponse:
        return StreamingResponse(relay(job_id, None), media_type="text/event-stream")

    @gateway.post("/jobs/{job_id}")
    async def submit(job_id: str, max_tokens: int = 64, tps: float = 0.0) -> dict:
        producer.send_task("naive.run", args=[job_id, max_tokens, tps])
        return {"id": job_id}

    return gateway
