"""Sending a job's task straight onto a Redis broker's queue: one LPUSH, no kombu, no thread.

A Celery task message is a documented format (Celery's message protocol v2: `headers`,
`properties` and a body `[args, kwargs, embed]`), and kombu's Redis transport keeps each message
as that JSON envelope in a list named after the queue (priority 0), which workers pop. Building it
here costs a few microseconds; kombu's producer costs ~40 % of a gateway's CPU during a burst of
submits (a thread hop, exchange lookups, per-message objects). The worker stays a plain Celery
worker: it cannot tell these messages from kombu's (tests/unit/test_task_message.py compares them).

Other brokers (RabbitMQ...) keep kombu's path (`tokenrelay.core.tasks.TaskSender`).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import uuid

from redis.asyncio import BlockingConnectionPool, Redis

from .protocol import check_job_id
from .tasks import TASK_NAME, DepthGauge

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def is_redis_broker(url: str) -> bool:
    return url.startswith(REDIS_SCHEMES)


def task_message(job_id: str, queue: str, origin: str) -> bytes:
    """The message kombu would LPUSH for `send_task(TASK_NAME, args=[job_id], queue=queue)`."""
    job_id = check_job_id(job_id)
    task_id = str(uuid.uuid4())
    body = json.dumps([[job_id], {}, _EMBED]).encode()
    return json.dumps({
        "body": base64.b64encode(body).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py", "task": TASK_NAME, "id": task_id, "shadow": None, "eta": None, "expires": None,
            "group": None, "group_index": None, "retries": 0, "timelimit": [None, None], "root_id": task_id,
            "parent_id": None, "argsrepr": repr([job_id]), "kwargsrepr": "{}", "origin": origin,
            "ignore_result": None, "replaced_task_nesting": 0, "stamped_headers": None, "stamps": {},
        },
        "properties": {
            "correlation_id": task_id,
            "reply_to": "",
            "delivery_mode": 2,  # persistent
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }).encode()


def _one_connection(redis: Redis) -> Redis:
    pool = redis.connection_pool
    return Redis.from_pool(BlockingConnectionPool(connection_class=pool.connection_class, max_connections=1,
                                                  **pool.connection_kwargs))


class RedisTaskSender:
    """Sends job tasks with one LPUSH on an asyncio Redis client (the gateway's own pool when the
    broker is the job store's Redis)."""

    def __init__(self, redis: Redis, queue: str, *, owns_client: bool = False) -> None:
        self.redis = redis
        self.queue = queue
        self.origin = f"gen{os.getpid()}@{socket.gethostname()}"
        self._owns_client = owns_client
        # A broker of its own: its depth is read on a connection of its own, so a slow broker's
        # measurement never holds one of the connections (a capped pool) the sends need.
        self._depth_redis = _one_connection(redis) if owns_client else redis
        self._depth = DepthGauge(lambda: self._depth_redis.llen(self.queue))

    async def send(self, job_id: str) -> None:
        await self.redis.lpush(self.queue, task_message(job_id, self.queue, self.origin))
        self._depth.sent()

    async def queue_depth(self, max_age_s: float = 0.0) -> int:
        """Task messages waiting in the queue: the list's length, now (`max_age_s` 0) or as a submit
        reads it, at most `max_age_s` old plus what this process sent since (see DepthGauge)."""
        return await self._depth.get(max_age_s)

    async def aclose(self) -> None:
        if self._owns_client:
            await self.redis.aclose()
            await self._depth_redis.aclose()
