"""Live frames written straight to the connection (api/direct_write.py): the relay and the stream response
served by a real uvicorn, on a real Valkey; clients read over real sockets."""

from __future__ import annotations

import asyncio
import socket
from contextlib import asynccontextmanager

import httpx
import uvicorn
from redis.asyncio import Redis
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from api.direct_write import SCOPE_KEY, Outlet, chunk_of, with_direct_writes
from api.event_stream import EventStreamResponse
from api.filters import StreamFilter
from api.relay import Relay
from tokenrelay.cli.embedded import free_port
from tokenrelay.core.connections import parse_redis_url
from tokenrelay.core.protocol import EventId, encode_fields, new_job_id
from tokenrelay.sse import SSEParser

from ..support.relay import KEYS, Recorder, append, until

LIMIT_FRAME = b": time limit\n\n"


class CountingOutlet(Outlet):
    """An outlet that counts the writes it let through (to see that the direct path was taken)."""

    __slots__ = ("written",)

    def __init__(self) -> None:
        super().__init__()
        self.written = 0

    def offer(self, chunk: bytes) -> bool:
        taken = super().offer(chunk)
        self.written += taken
        return taken


def stream_app(relay: Relay, outlets: list[CountingOutlet], max_s: float = float("inf")):
    """`GET /{job_id}[?after=ID][&events=...]`: the job's stream as the gateway serves it."""
    async def app(scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        query = dict(pair.split("=") for pair in scope["query_string"].decode().split("&") if pair)
        after = EventId.parse(query["after"]) if "after" in query else None
        stream_filter = StreamFilter.from_query(tags=None, node=None, events=query.get("events"), final_only=False)
        outlet = CountingOutlet()
        outlets.append(outlet)
        frames = relay.follow(scope["path"].strip("/"), after, stream_filter, outlet=outlet)
        await EventStreamResponse(frames, headers={}, max_s=max_s, limit_frame=LIMIT_FRAME, outlet=outlet)(
            scope, receive, send)

    return app


@asynccontextmanager
async def serving(redis_url: str, *, direct: bool = True, max_s: float = float("inf"), **relay_options):
    """A relay and a uvicorn serving its streams, in this loop: (relay, redis, port, outlets)."""
    redis, relay_redis = Redis.from_url(redis_url), Redis.from_url(redis_url)
    options = {"history_batch": 100, "client_buffer_events": 100, "keepalive_s": 5, **relay_options}
    relay = Relay(relay_redis, parse_redis_url(redis_url), KEYS, hooks=Recorder(), **options)
    await relay.start()
    outlets: list[CountingOutlet] = []
    port = free_port()
    protocol = with_direct_writes(HttpToolsProtocol) if direct else HttpToolsProtocol
    server = uvicorn.Server(uvicorn.Config(stream_app(relay, outlets, max_s), host="127.0.0.1", port=port,
                                           http=protocol, lifespan="off", log_level="warning"))
    serve = asyncio.create_task(server.serve())
    try:
        await until(lambda: server.started)
        yield relay, redis, port, outlets
    finally:
        server.should_exit = True
        await serve
        await relay.stop()
        await relay_redis.aclose()
        await redis.aclose()


async def read_stream(client: httpx.AsyncClient, url: str) -> tuple[list[tuple[str, str]], bytes]:
    """(id, event) of each event of the response, and its whole body."""
    parser, body = SSEParser(), b""
    async with client.stream("GET", url) as response:
        assert response.status_code == 200
        async for chunk in response.aiter_bytes():
            body += chunk
    return [(event.id, event.event) for event in parser.feed(body.decode())], body


def token(seq: int) -> dict:
    return encode_fields("token", {"text": f"t{seq}", "index": seq})


END = encode_fields("end", {"status": "succeeded", "usage": {}, "finish_reason": "stop"})


def test_many_readers_get_every_live_event_once_in_order_written_straight_to_their_connections(redis_server):
    async def scenario():
        async with serving(redis_server.url) as (relay, redis, port, outlets):
            job_id = new_job_id()
            await append(redis, job_id, "1-1", token(1))  # history for the resumed reader
            base = f"http://127.0.0.1:{port}/{job_id}"
            async with httpx.AsyncClient(timeout=20) as client:
                readers = [asyncio.create_task(read_stream(client, base)) for _ in range(20)]
                readers.append(asyncio.create_task(read_stream(client, f"{base}?after=1-1")))
                readers.append(asyncio.create_task(read_stream(client, f"{base}?events=reset")))
                await until(lambda: relay.reader_count == 22)  # each bound its outlet before it joined
                for seq in range(2, 12):  # one entry per round: each goes out on its own
                    await append(redis, job_id, f"1-{seq}", token(seq))
                    await until(lambda: relay.hooks.read >= seq - 1)
                async with redis.pipeline(transaction=False) as pipe:  # a burst: rounds of several entries
                    for seq in range(12, 40):
                        pipe.xadd(KEYS.events(job_id), token(seq), id=f"1-{seq}")
                    pipe.xadd(KEYS.events(job_id), END, id="1-40")
                    pipe.spublish(KEYS.live(job_id), "1-40")
                    await pipe.execute()
                got = await asyncio.wait_for(asyncio.gather(*readers), 20)
            await redis.delete(KEYS.events(job_id))
            return got, outlets

    got, outlets = asyncio.run(scenario())
    every = [(f"1-{seq}", "token") for seq in range(1, 40)] + [("1-40", "end")]
    for events, _ in got[:20]:
        assert events == every
    assert got[20][0] == every[1:]  # resumed after 1-1: no duplicate, no gap
    assert got[21][0] == [("1-40", "end")]  # its filter passes `end` only
    # The live tokens went straight to the sockets, not through the readers' tasks: 38 entries in 11
    # rounds (10 alone, then the burst), one write per round.
    assert all(2 <= outlet.written <= 11 for outlet in outlets[:21]), [outlet.written for outlet in outlets]


def test_without_the_servers_direct_writes_every_frame_goes_through_send(redis_server):
    async def scenario():
        async with serving(redis_server.url, direct=False) as (relay, redis, port, outlets):
            job_id = new_job_id()
            async with httpx.AsyncClient(timeout=20) as client:
                readers = [asyncio.create_task(read_stream(client, f"http://127.0.0.1:{port}/{job_id}"))
                           for _ in range(3)]
                await until(lambda: relay.reader_count == 3)
                for seq in range(1, 6):
                    await append(redis, job_id, f"1-{seq}", token(seq))
                await append(redis, job_id, "1-6", END)
                got = await asyncio.wait_for(asyncio.gather(*readers), 20)
            await redis.delete(KEYS.events(job_id))
            return got, outlets

    got, outlets = asyncio.run(scenario())
    for events, _ in got:
        assert events == [(f"1-{seq}", "token") for seq in range(1, 6)] + [("1-6", "end")]
    assert [outlet.written for outlet in outlets] == [0, 0, 0]


def test_a_stream_fed_straight_to_its_connection_still_ends_at_its_time_limit(redis_server):
    async def scenario():
        async with serving(redis_server.url, max_s=0.5) as (relay, redis, port, outlets):
            job_id = new_job_id()
            async with httpx.AsyncClient(timeout=20) as client:
                reader = asyncio.create_task(read_stream(client, f"http://127.0.0.1:{port}/{job_id}"))
                await until(lambda: relay.reader_count == 1)
                seq = 0
                while not reader.done():  # a live job that never ends: only the limit ends the stream
                    seq += 1
                    await append(redis, job_id, f"1-{seq}", token(seq))
                    await asyncio.sleep(0.02)
                events, body = await reader
            await redis.delete(KEYS.events(job_id))
            return events, body, outlets

    events, body, outlets = asyncio.run(scenario())
    assert body.endswith(LIMIT_FRAME)
    assert events and events == [(f"1-{seq}", "token") for seq in range(1, len(events) + 1)]
    assert outlets[0].written >= 1


def test_an_outlet_refuses_while_the_client_does_not_read_and_nothing_written_is_lost():
    """A client that stops reading: once its socket and the transport's buffer fill, the outlet refuses
    (the reader's task then sends through `send`, which waits); what it took arrives whole, in order."""
    frame = b"data: " + b"x" * 16_000 + b"\n\n"
    offered: list[int] = []

    async def app(scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        outlet = Outlet()
        outlet.bind(scope[SCOPE_KEY], deadline=float("inf"))
        assert not outlet.offer(chunk_of(frame))  # not streaming yet
        await send({"type": "http.response.start", "status": 200, "headers": []})
        while outlet.offer(chunk_of(frame)) and len(offered) < 10_000:
            offered.append(len(frame))
        await send({"type": "http.response.body", "body": b"last\n\n", "more_body": False})
        assert not outlet.offer(chunk_of(frame))  # the response is over

    async def scenario() -> bytes:
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning",
                                               http=with_direct_writes(HttpToolsProtocol)))
        serve = asyncio.create_task(server.serve())
        await until(lambda: server.started)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        try:
            await loop.sock_connect(sock, ("127.0.0.1", port))
            await loop.sock_sendall(sock, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            await until(lambda: offered)  # offered until refused, in one go, with nothing read yet
            raw = b""
            while not raw.endswith(b"0\r\n\r\n"):
                data = await asyncio.wait_for(loop.sock_recv(sock, 65536), 10)
                assert data, "the response ended early"
                raw += data
            return raw
        finally:
            sock.close()
            server.should_exit = True
            await serve

    raw = asyncio.run(scenario())
    head, body = raw.split(b"\r\n\r\n", 1)
    assert b"transfer-encoding: chunked" in head.lower()
    assert 1 <= len(offered) < 10_000  # it refused long before the app gave up offering
    assert body == b"".join(chunk_of(frame) for _ in offered) + chunk_of(b"last\n\n") + b"0\r\n\r\n"
