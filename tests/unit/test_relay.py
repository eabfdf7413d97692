"""The relay's two ways to read a job (SSE bytes, decoded events) and its hooks, on one real Valkey."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from api.filters import StreamFilter
from api.metrics import GatewayMetrics
from api.relay import Relay, RelayHooks
from tokenrelay.cli.embedded import free_port
from tokenrelay.core import protocol
from tokenrelay.core.connections import parse_redis_url
from tokenrelay.core.protocol import EventId, encode_fields, new_job_id, notification
from tokenrelay.sse import SSEParser

from ..support.relay import KEYS, Recorder, append, append_notified, until

def run(url: str, scenario, *, relay_url: str | None = None, hooks: RelayHooks | None = None, **options):
    """`scenario(relay, redis)`; the relay reads from `relay_url` (default: the same server)."""
    async def main():
        redis, relay_redis = Redis.from_url(url), Redis.from_url(relay_url or url)
        settings = {"history_batch": 3, "client_buffer_events": 100, "keepalive_s": 5, **options}
        relay = Relay(relay_redis, parse_redis_url(relay_url or url), KEYS, hooks=hooks or Recorder(), **settings)
        await relay.start()
        try:
            return await scenario(relay, redis), relay.hooks
        finally:
            await relay.stop()
            await relay_redis.aclose()
            await redis.aclose()

    return asyncio.run(main())


EVENTS = [("metadata", {"job_id": "x", "attempt": 1, "model": "demo"}), ("token", {"text": "Hé", "index": 0}),
          ("token", {"text": " a\nb", "index": 1, "count": 2}), ("reset", {"attempt": 2, "reason": "worker_lost"}),
          ("token", {"text": "\"quoted\"", "index": 0}), ("end", {"status": "succeeded", "usage": {},
                                                                   "finish_reason": "stop"})]
IDS = ["1-0", "1-1", "1-2", "2-0", "2-1", "2-2"]


async def publish(redis: Redis, job_id: str, indexes: range) -> None:
    for i in indexes:
        await append(redis, job_id, IDS[i], encode_fields(*EVENTS[i]))


def test_follow_events_yields_what_an_sse_client_of_follow_decodes(redis_server):
    async def scenario(relay: Relay, redis: Redis):
        job_id = new_job_id()
        await publish(redis, job_id, range(0, 4))  # history, in two XRANGE batches of 3

        async def events() -> list:
            return [event async for event in relay.follow_events(job_id)]

        async def sse() -> list:
            parser = SSEParser()
            return [event async for chunk in relay.follow(job_id, None) for event in parser.feed(chunk.decode())]

        readers = asyncio.gather(events(), sse())
        await until(lambda: relay.reader_count == 2)  # both readers are live before the rest arrives
        await publish(redis, job_id, range(4, 6))
        decoded, parsed = await asyncio.wait_for(readers, 10)
        resumed = [event async for event in relay.follow_events(job_id, after=EventId(2, 0))]
        await redis.delete(KEYS.events(job_id))
        return decoded, parsed, resumed

    (decoded, parsed, resumed), hooks = run(redis_server.url, scenario)
    assert [(e.id, e.event, e.data) for e in decoded] == [(i, t, d) for i, (t, d) in zip(IDS, EVENTS)]
    assert decoded == parsed
    assert [e.id for e in resumed] == ["2-1", "2-2"] and resumed[-1].is_end
    assert hooks.sent_events == 6 + 6 + 2
    assert hooks.sent_tokens == 3 + 3 + 1
    assert hooks.read >= 2 and hooks.dropped == 0 and not hooks.failures


def test_follow_events_says_when_the_stream_is_idle_and_honours_filters(redis_server):
    async def scenario(relay: Relay, redis: Redis):
        job_id = new_job_id()
        await publish(redis, job_id, range(0, 2))
        only_tokens = StreamFilter.from_query(tags=None, node=None, events="token", final_only=False)
        events = relay.follow_events(job_id, stream_filter=only_tokens)
        first = await events.__anext__()
        idle = await asyncio.wait_for(events.__anext__(), 5)  # keepalive_s passes with nothing new
        frames = relay.follow(job_id, EventId(1, 1))
        keepalive = await asyncio.wait_for(frames.__anext__(), 5)
        await frames.aclose()
        await publish(redis, job_id, range(2, 6))
        rest = [event async for event in events if event is not None]
        await redis.delete(KEYS.events(job_id))
        return first, idle, keepalive, rest

    (first, idle, keepalive, rest), hooks = run(redis_server.url, scenario, keepalive_s=0.3)
    assert first.id == "1-1" and idle is None and keepalive == protocol.KEEPALIVE_FRAME
    # Tokens pass the filter; reset and end always do.
    assert [(e.id, e.event) for e in rest] == [("1-2", "token"), ("2-0", "reset"), ("2-1", "token"), ("2-2", "end")]
    assert hooks.sent_tokens == 3


def test_hooks_see_a_slow_reader_cut_off_and_a_failed_read(redis_server):
    async def scenario(relay: Relay, redis: Redis):
        job_id = new_job_id()
        await publish(redis, job_id, range(0, 1))
        follower = relay.follow_events(job_id)
        seen = [await follower.__anext__()]  # history; paused before it joins the hub
        await append(redis, job_id, "1-1", encode_fields("token", {"text": "x", "index": 0}))
        seen.append(await follower.__anext__())  # joined, live
        for seq in range(2, 12):  # published while the reader does not read
            await append(redis, job_id, f"1-{seq}", encode_fields("token", {"text": "x", "index": seq}))
        await until(lambda: relay.hooks.read >= 11)  # the relay has read them all, past the reader's buffer
        seen += [event async for event in follower]
        await redis.delete(KEYS.events(job_id))
        return seen

    seen, hooks = run(redis_server.url, scenario, client_buffer_events=3)
    assert hooks.dropped == 1
    ids = [e.id for e in seen]  # in order, no gap, then cut off (without `end`) long before 1-11
    assert ids == [f"1-{seq}" for seq in range(len(ids))] and 2 <= len(ids) <= 5
    assert hooks.read >= 11 and hooks.reads >= 2

    async def follow_a_job(relay: Relay, redis: Redis):
        events = relay.follow_events(new_job_id(), fresh=True)
        try:
            await asyncio.wait_for(events.__anext__(), 1.0)
        except TimeoutError:
            pass

    _, hooks = run(redis_server.url, follow_a_job, relay_url=f"redis://127.0.0.1:{free_port()}/0")
    assert hooks.failures and hooks.reads == 0


def test_gateway_metrics_count_through_the_hooks_once_per_entry_whatever_the_readers(redis_server):
    metrics = GatewayMetrics()

    async def scenario(relay: Relay, redis: Redis):
        job_id = new_job_id()
        readers = [asyncio.create_task(consume(relay.follow_events(job_id))) for _ in range(5)]
        await until(lambda: relay.reader_count == 5)  # all five are live before anything is published
        await publish(redis, job_id, range(0, 6))
        got = await asyncio.wait_for(asyncio.gather(*readers), 10)
        await redis.delete(KEYS.events(job_id))
        return got

    async def consume(events) -> list:
        return [event.id async for event in events if event is not None]

    got, _ = run(redis_server.url, scenario, hooks=metrics.relay_hooks())
    assert got == [IDS] * 5
    assert counter(metrics, "tokenrelay_relay_entries_read_total") == 6  # read once, relayed five times
    assert counter(metrics, "tokenrelay_token_events_relayed_total") == 5 * 3
    assert counter(metrics, "tokenrelay_relay_reads_total") >= 1
    assert counter(metrics, "tokenrelay_slow_reader_disconnects_total") == 0


def counter(metrics: GatewayMetrics, name: str) -> float:
    return metrics.registry.get_sample_value(name) or 0.0


def _follow_fresh(relay: Relay, job_id: str, readers: int) -> list[asyncio.Task]:
    async def consume(events) -> list:
        return [(event.id, event.event) async for event in events if event is not None]

    return [asyncio.create_task(consume(relay.follow_events(job_id, fresh=True))) for _ in range(readers)]


def test_entries_a_notification_carries_are_relayed_without_reading_them_back(redis_server):
    async def scenario(relay: Relay, redis: Redis):
        job_id = new_job_id()
        readers = _follow_fresh(relay, job_id, 2)
        await until(lambda: relay.reader_count == 2 and relay.hooks.reads >= 1, 5, "subscribed and read once")
        await append_notified(redis, job_id, [("1-0", encode_fields(*EVENTS[0])), ("1-1", encode_fields(*EVENTS[1]))])
        await append_notified(redis, job_id, [("1-2", encode_fields(*EVENTS[2]))])
        await append(redis, job_id, "1-3", encode_fields("end", {"status": "succeeded"}))  # notifies its id only
        return await asyncio.wait_for(asyncio.gather(*readers), 10)

    got, hooks = run(redis_server.url, scenario)
    assert got == [[("1-0", "metadata"), ("1-1", "token"), ("1-2", "token"), ("1-3", "end")]] * 2
    assert hooks.notified == 3 and hooks.read == 1  # only `end` was read from the stream


def test_a_notification_that_does_not_follow_what_was_relayed_is_read_from_the_stream(redis_server):
    async def scenario(relay: Relay, redis: Redis):
        job_id = new_job_id()
        readers = _follow_fresh(relay, job_id, 1)
        await until(lambda: relay.reader_count == 1 and relay.hooks.reads >= 1, 5, "subscribed and read once")
        await redis.xadd(KEYS.events(job_id), encode_fields(*EVENTS[0]), id="1-0")  # its notification was lost
        await append_notified(redis, job_id, [("1-1", encode_fields(*EVENTS[1]))])  # a gap: read instead
        await until(lambda: relay.hooks.read == 2, 5, "both read")
        await redis.spublish(KEYS.live(job_id), notification([("1-1", encode_fields(*EVENTS[1]))]))  # a retry's
        await append(redis, job_id, "1-2", encode_fields("end", {"status": "succeeded"}))
        return await asyncio.wait_for(asyncio.gather(*readers), 10)

    got, hooks = run(redis_server.url, scenario)
    assert got == [[("1-0", "metadata"), ("1-1", "token"), ("1-2", "end")]]  # in order, once each
    assert hooks.notified == 0
