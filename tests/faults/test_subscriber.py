"""The gateway's sharded subscriber against a node that stops answering (a blackholed network): the
silent connection is given up after `ping_timeout_s`, and its channels are subscribed again once the
node answers, with `on_ready` so the relay reads what it missed."""

from __future__ import annotations

import asyncio
import time

from redis.asyncio import Redis

from tokenrelay.core.connections import parse_redis_url, subscriber_connector
from tokenrelay.core.shardsub import ShardSubscriber

from ..support.relay import until
from .proxy import FaultProxy

PING_TIMEOUT_S = 2.0


def test_a_silent_node_is_given_up_and_its_channels_come_back_when_it_answers(redis_server):
    async def scenario(proxy: FaultProxy) -> None:
        messages, ready, lost = [], [], []
        target = parse_redis_url(proxy.url)
        redis = Redis.from_url(proxy.url)
        subscriber = ShardSubscriber(redis, subscriber_connector(target, client_name="test-sub"),
                                     on_message=messages.append, on_ready=ready.append, on_lost=lost.append,
                                     ping_timeout_s=PING_TIMEOUT_S)
        publisher = Redis.from_url(redis_server.url)
        try:
            await subscriber.subscribe(b"{job}:live")
            await until(lambda: ready == [b"{job}:live"], 5, "subscription confirmed")
            await publisher.spublish("{job}:live", "1-0")
            await until(lambda: messages == [b"{job}:live"], 5, "message relayed")

            proxy.set_mode("blackhole")
            blackholed_at = time.monotonic()
            await until(lambda: lost, PING_TIMEOUT_S + 5, "silent connection given up")
            given_up_s = time.monotonic() - blackholed_at
            assert lost == [{b"{job}:live"}]
            assert PING_TIMEOUT_S <= given_up_s <= PING_TIMEOUT_S + 3, given_up_s

            proxy.set_mode("pass")
            await until(lambda: len(ready) == 2, 10, "subscribed again")
            await publisher.spublish("{job}:live", "1-1")
            await until(lambda: len(messages) == 2, 5, "messages flow again")
            assert ready == [b"{job}:live", b"{job}:live"]
        finally:
            await subscriber.close()
            await redis.aclose()
            await publisher.aclose()

    with FaultProxy(redis_server.port) as proxy:
        asyncio.run(scenario(proxy))
