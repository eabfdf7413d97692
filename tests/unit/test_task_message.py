"""The task message the gateway LPUSHes is the one kombu's Redis transport would have queued."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
import redis
from redis.asyncio import Redis

from tokenrelay.core.settings import Settings
from tokenrelay.core.task_message import RedisTaskSender, is_redis_broker, task_message
from tokenrelay.core.tasks import TaskSender, create_celery_app

JOB_ID = "0123456789abcdef0123456789abcdef"
# Fresh per message: ids, and where it came from.
VARYING = {("headers", "id"), ("headers", "root_id"), ("headers", "origin"), ("properties", "correlation_id"),
           ("properties", "delivery_tag"), ("properties", "reply_to")}


def _queued(url: str, queue: str) -> dict:
    client = redis.Redis.from_url(url)
    try:
        raw = client.rpop(queue)
    finally:
        client.close()
    assert raw is not None
    return json.loads(raw)


def _without_varying(message: dict) -> dict:
    return {part: ({k: v for k, v in value.items() if (part, k) not in VARYING} if isinstance(value, dict) else value)
            for part, value in message.items()}


def test_same_message_as_kombu(redis_server):
    queue = "tokenrelay-task-message-test"
    settings = Settings(redis_url=redis_server.url, queue_name=queue)
    kombu_sender = TaskSender(create_celery_app(settings))

    async def send_both() -> None:
        await kombu_sender.send(JOB_ID)
        client = Redis.from_url(redis_server.url)
        await RedisTaskSender(client, queue).send(JOB_ID)
        await client.aclose()
        await kombu_sender.aclose()

    asyncio.run(send_both())
    from_kombu, ours = _queued(redis_server.url, queue), _queued(redis_server.url, queue)
    assert _without_varying(ours) == _without_varying(from_kombu)
    assert base64.b64decode(ours["body"]) == base64.b64decode(from_kombu["body"])
    assert ours["headers"]["id"] == ours["headers"]["root_id"] == ours["properties"]["correlation_id"]
    assert ours["headers"]["id"] != ours["properties"]["delivery_tag"]


def test_only_validated_job_ids_become_messages():
    with pytest.raises(Exception):
        task_message("../../etc", "tokenrelay", "gen1@host")


@pytest.mark.parametrize("url, redis_broker", [
    ("redis://127.0.0.1:6379/0", True), ("rediss://host:6380/1", True), ("unix:///tmp/redis.sock", True),
    ("amqp://guest:guest@localhost:5672//", False), ("sentinel://h:26379", False),
])
def test_kombu_stays_for_other_brokers(url, redis_broker):
    assert is_redis_broker(url) is redis_broker
