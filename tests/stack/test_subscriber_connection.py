"""The gateway's sharded subscriber keeps a node's connection between jobs: a job's subscription costs
one SSUBSCRIBE on a connection that is already open, not a new connection and its handshake."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from tokenrelay.core.connections import parse_redis_url, subscriber_connector
from tokenrelay.core.shardsub import ShardSubscriber

from ..support.relay import until

CLIENT_NAME = "test-sub-kept"


async def _subscriber_ids(redis: Redis) -> list[int]:
    return [client["id"] for client in await redis.client_list() if client.get("name") == CLIENT_NAME]


def _no_subscriber_of(redis: Redis, channel: str):
    async def check() -> bool:
        return (await redis.execute_command("PUBSUB", "SHARDNUMSUB", channel))[1] == 0
    return check


def _subscriber(url: str, messages: list, ready: list) -> tuple[Redis, ShardSubscriber]:
    """A client of the server and a subscriber that records the channels of messages and confirmations."""
    redis = Redis.from_url(url, decode_responses=False)
    subscriber = ShardSubscriber(redis, subscriber_connector(parse_redis_url(url), client_name=CLIENT_NAME),
                                 on_message=lambda channel, data: messages.append(channel),
                                 on_ready=ready.append, on_lost=print)
    return redis, subscriber


def test_the_connection_outlives_the_last_channel_and_serves_the_next_job(redis_server):
    async def scenario() -> None:
        messages, ready = [], []
        redis, subscriber = _subscriber(redis_server.url, messages, ready)
        try:
            await subscriber.subscribe(b"{first}:live")
            await until(lambda: ready == [b"{first}:live"], 5, "first subscription confirmed")
            connection = await _subscriber_ids(redis)
            assert len(connection) == 1

            subscriber.release(b"{first}:live")  # the first job is over: its channel is dropped
            await until(_no_subscriber_of(redis, "{first}:live"), 5, "the server to drop the released channel")
            assert await _subscriber_ids(redis) == connection  # still open, with nothing subscribed

            await subscriber.subscribe(b"{second}:live")
            await until(lambda: ready[-1:] == [b"{second}:live"], 5, "second subscription confirmed")
            assert await _subscriber_ids(redis) == connection  # the same connection serves the next job
            await redis.spublish("{first}:live", "1-0")  # no longer followed
            await redis.spublish("{second}:live", "1-0")
            await until(lambda: messages == [b"{second}:live"], 5, "the second job's notification")
        finally:
            await subscriber.close()
        assert await _subscriber_ids(redis) == []  # closing the subscriber closes the connection
        await redis.aclose()

    asyncio.run(scenario())


def test_subscribes_and_releases_made_together_leave_the_server_with_the_wanted_channels(redis_server):
    """A burst of new jobs subscribes together while finished ones release: each subscribe returns with its
    subscription sent and is confirmed; a channel released and wanted again stays; the rest are dropped."""
    async def scenario() -> None:
        messages, ready = [], []
        redis, subscriber = _subscriber(redis_server.url, messages, ready)
        first = [f"{{a{n}}}:live".encode() for n in range(300)]
        second = [f"{{b{n}}}:live".encode() for n in range(300)]
        try:
            already = await asyncio.gather(*(subscriber.subscribe(channel) for channel in first))
            assert already == [False] * 300 and all(subscriber.sent(channel) for channel in first)
            await until(lambda: sorted(ready) == sorted(first), 10, "300 subscriptions confirmed")

            for channel in first[:200]:  # those jobs ended...
                subscriber.release(channel)
            wanted_again = subscriber.subscribe(first[0])  # ...and a reader of one of them came back
            await asyncio.gather(wanted_again, *(subscriber.subscribe(channel) for channel in second))
            wanted = {first[0], *first[200:], *second}

            async def server_has_wanted() -> bool:
                listed = await redis.execute_command("PUBSUB", "SHARDCHANNELS")
                return set(listed) == wanted
            await until(server_has_wanted, 10, "the server to hold exactly the wanted channels")
            for channel in (first[0], first[1], second[0]):
                await redis.spublish(channel, "1-0")
            await until(lambda: sorted(messages) == sorted([first[0], second[0]]), 5, "the wanted channels' messages")
        finally:
            await subscriber.close()
        await redis.aclose()

    asyncio.run(scenario())
