"""The gateway's sharded subscriber against a node that stops answering (a blackholed network): the
silent connection is given up after `ping_timeout_s`, and its channels are subscribed again once the
node answers, with `on_ready` so the relay reads what it missed."""

from __future__ import annotations

import asyncio
import time

from redis.asyncio import Redis

from api.relay import Relay
from tokenrelay.core.connections import parse_redis_url, subscriber_connector
from tokenrelay.core.protocol import encode_fields, new_job_id
from tokenrelay.core.shardsub import ShardSubscriber

from ..support.relay import KEYS, Recorder, append, until
from .proxy import FaultProxy

PING_TIMEOUT_S = 2.0


def test_a_silent_node_is_given_up_and_its_channels_come_back_when_it_answers(redis_server):
    async def scenario(proxy: FaultProxy) -> None:
        messages, ready, lost = [], [], []
        target = parse_redis_url(proxy.url)
        redis = Redis.from_url(proxy.url)
        subscriber = ShardSubscriber(redis, subscriber_connector(target, client_name="test-sub"),
                                     on_message=lambda channel, data: messages.append(channel),
                                     on_ready=ready.append, on_lost=lost.append, ping_timeout_s=PING_TIMEOUT_S)
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


def test_a_first_reader_leaving_mid_subscribe_does_not_strand_the_readers_that_joined_meanwhile(redis_server):
    # The relay reaches Redis through a slow link, so the first reader's subscription takes a while; a second
    # reader joins the job's hub meanwhile, then the first one leaves. The second must still get what comes.
    async def scenario(proxy: FaultProxy) -> None:
        redis = Redis.from_url(redis_server.url)
        relay_redis = Redis.from_url(proxy.url)
        relay = Relay(relay_redis, parse_redis_url(proxy.url), KEYS, hooks=Recorder(), history_batch=10,
                      client_buffer_events=100, keepalive_s=30)
        await relay.start()
        job_id = new_job_id()
        await append(redis, job_id, "1-0", encode_fields("token", {"text": "a", "index": 0}))
        first, second = relay.follow_events(job_id), relay.follow_events(job_id)
        try:
            assert (await first.__anext__()).id == "1-0"  # its history; the next step subscribes
            proxy.set_mode("delay", delay_s=0.4, replies_only=True)
            leaving = asyncio.create_task(first.__anext__())
            assert (await second.__anext__()).id == "1-0"
            waiting = asyncio.create_task(second.__anext__())  # joins the hub the first one is subscribing
            await until(lambda: relay.reader_count == 2, 5, "both readers on the hub")
            assert not leaving.done()  # still subscribing
            leaving.cancel()
            await asyncio.gather(leaving, return_exceptions=True)
            await first.aclose()
            proxy.set_mode("pass")
            await append(redis, job_id, "1-1", encode_fields("token", {"text": "b", "index": 1}))
            event = await asyncio.wait_for(waiting, 10)
            assert (event.id, event.data["text"]) == ("1-1", "b")
        finally:
            await second.aclose()
            await relay.stop()
            await relay_redis.aclose()
            await redis.aclose()

    with FaultProxy(redis_server.port) as proxy:
        asyncio.run(scenario(proxy))
