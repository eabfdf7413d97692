"""The Redis broker transport (tokenrelay/core/broker.py) records each received message as unacknowledged
(so it comes back if its worker dies) after handing it to the worker, not before: the job's start does
not wait for that write, and the record is there before anything can acknowledge the message."""

from __future__ import annotations

import uuid

from kombu import Connection, Consumer, Exchange, Queue
from redis import Redis

from tokenrelay.core.broker import Transport


def _consume_one(url: str, on_message) -> tuple[Redis, Connection, str]:
    name = f"test-tracking-{uuid.uuid4().hex}"
    connection = Connection(url, transport=Transport)
    queue = Queue(name, Exchange(name), routing_key=name)
    with connection.Producer() as producer:
        producer.publish({"job": name}, exchange=queue.exchange, routing_key=name, declare=[queue])
    consumer = Consumer(connection.default_channel, [queue], callbacks=[on_message], accept=["json"])
    consumer.consume()
    connection.drain_events(timeout=5)
    return Redis.from_url(url), connection, connection.default_channel.unacked_key


def test_a_message_is_recorded_as_unacknowledged_after_its_dispatch_until_acknowledged(redis_server):
    received, recorded_at_dispatch = [], []
    redis = Redis.from_url(redis_server.url)

    def on_message(body, message):
        recorded_at_dispatch.append(redis.hexists(message.channel.unacked_key, message.delivery_tag))
        received.append(message)

    client, connection, unacked = _consume_one(redis_server.url, on_message)
    try:
        [message] = received
        assert recorded_at_dispatch == [False]  # handed over first
        assert client.hexists(unacked, message.delivery_tag)  # then recorded: a lost worker's job comes back
        message.ack()
        assert not client.hexists(unacked, message.delivery_tag)
    finally:
        connection.release()
        client.close()
        redis.close()


def test_a_message_acknowledged_at_once_is_not_recorded(redis_server):
    received = []

    def on_message(body, message):
        message.ack()  # as Celery does with a message it cannot run
        received.append(message)

    client, connection, unacked = _consume_one(redis_server.url, on_message)
    try:
        [message] = received
        assert not client.hexists(unacked, message.delivery_tag)
        assert not client.zscore(f"{unacked}_index", message.delivery_tag)
    finally:
        connection.release()
        client.close()
