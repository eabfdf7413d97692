"""`Client` and `AsyncClient` make the same requests and give the same answers; only their I/O differs.

The gateway side is faked at the transport boundary (httpx's MockTransport), as httpx's own tests do;
the stack tests run both clients against a real gateway.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from tokenrelay import AsyncClient, Client, ClientError

JOB = "a" * 32


class Body(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body sent in pieces, optionally cut off (a dropped connection) after the last one."""

    def __init__(self, pieces: list[bytes], drop: bool = False) -> None:
        self.pieces, self.drop = pieces, drop

    def __iter__(self):
        yield from self.pieces
        if self.drop:
            raise httpx.ReadError("connection dropped")

    async def __aiter__(self):
        for piece in self.pieces:
            yield piece
        if self.drop:
            raise httpx.ReadError("connection dropped")


def frame(event_id: str, event: str, data: dict) -> bytes:
    return f"id: {event_id}\nevent: {event}\ndata: {json.dumps(data)}\n\n".encode()


class Gateway:
    """Answers like a gateway would, and records every request."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.streams = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if path == "/v1/jobs" and request.method == "POST":
            body = json.loads(request.content)
            if body.get("model") == "nope":
                return httpx.Response(400, json={"error": {"message": "model 'nope' is not available",
                                                           "type": "invalid_request_error", "param": "model",
                                                           "code": None}})
            return httpx.Response(202, json={"id": JOB, "status": "queued", "echo": body})
        if path == "/v1/jobs":
            return httpx.Response(200, json={"object": "list", "data": [{"id": JOB}]})
        if path == f"/v1/jobs/{JOB}/cancel":
            return httpx.Response(202, json={"id": JOB, "cancelled": True})
        if path == f"/v1/jobs/{JOB}/stream":
            self.streams += 1
            if self.streams == 1:  # two events, the second split across reads, then a drop
                second = frame("1-1", "token", {"text": "Hi", "index": 0})
                return httpx.Response(200, stream=Body([frame("1-0", "metadata", {"attempt": 1}) + second[:9],
                                                        second[9:]], drop=True))
            return httpx.Response(200, stream=Body([b": keepalive\n\n", frame("1-2", "token", {"text": "!", "index": 1}),
                                                    frame("1-3", "end", {"status": "succeeded"}),
                                                    frame("1-4", "token", {"text": "never", "index": 2})]))
        if path == f"/v1/jobs/{JOB}":
            return httpx.Response(200, json={"id": JOB, "status": "running"})
        return httpx.Response(502, text="<html>bad gateway</html>")


def run_sync(gateway: Gateway) -> dict:
    with Client("http://gw", api_key="k1", transport=httpx.MockTransport(gateway)) as client:
        seen = {"submit": client.submit("hello", params={"max_tokens": 3}),
                "graph": client.submit_graph("joke_poem", {"topic": "x"}, stream_mode=["messages"]),
                "get": client.get(JOB), "cancel": client.cancel(JOB), "list": client.list_jobs(5),
                "events": [(e.id, e.event, e.data) for e in client.stream(JOB, filters={"final_only": True,
                                                                                         "tags": ["a", "b"]})]}
        for name, call in (("refused", lambda: client.submit("x", model="nope")), ("html", lambda: client.get("zz"))):
            with pytest.raises(ClientError) as raised:
                call()
            seen[name] = (raised.value.status_code, raised.value.error_type, raised.value.message, raised.value.param)
    return seen


async def run_async(gateway: Gateway) -> dict:
    async with AsyncClient("http://gw", api_key="k1", transport=httpx.MockTransport(gateway)) as client:
        seen = {"submit": await client.submit("hello", params={"max_tokens": 3}),
                "graph": await client.submit_graph("joke_poem", {"topic": "x"}, stream_mode=["messages"]),
                "get": await client.get(JOB), "cancel": await client.cancel(JOB), "list": await client.list_jobs(5),
                "events": [(e.id, e.event, e.data) async for e in client.stream(
                    JOB, filters={"final_only": True, "tags": ["a", "b"]})]}
        for name, call in (("refused", lambda: client.submit("x", model="nope")), ("html", lambda: client.get("zz"))):
            with pytest.raises(ClientError) as raised:
                await call()
            seen[name] = (raised.value.status_code, raised.value.error_type, raised.value.message, raised.value.param)
    return seen


def requests_of(gateway: Gateway) -> list[tuple]:
    return [(r.method, str(r.url), r.headers.get("authorization"), r.headers.get("last-event-id"), r.content)
            for r in gateway.requests]


def test_both_clients_send_the_same_requests_and_return_the_same_answers():
    sync_gateway, async_gateway = Gateway(), Gateway()
    sync_seen = run_sync(sync_gateway)
    async_seen = asyncio.run(run_async(async_gateway))
    assert sync_seen == async_seen
    assert requests_of(sync_gateway) == requests_of(async_gateway)

    assert sync_seen["submit"]["echo"] == {"model": "demo", "prompt": "hello", "params": {"max_tokens": 3}}
    assert sync_seen["graph"]["echo"] == {"graph": "joke_poem", "input": {"topic": "x"}, "stream_mode": ["messages"]}
    assert sync_seen["list"] == [{"id": JOB}]
    # The drop after 1-1 is resumed from there: every event once, in order, nothing after `end`.
    assert [event_id for event_id, _, _ in sync_seen["events"]] == ["1-0", "1-1", "1-2", "1-3"]
    assert sync_seen["events"][1] == ("1-1", "token", {"text": "Hi", "index": 0})
    streams = [r for r in sync_gateway.requests if r.url.path.endswith("/stream")]
    assert [r.headers.get("last-event-id") for r in streams] == [None, "1-1"]
    assert all(r.url.params == httpx.QueryParams({"final_only": "true", "tags": "a,b"}) for r in streams)
    assert all(r.headers["authorization"] == "Bearer k1" for r in sync_gateway.requests)
    assert sync_seen["refused"] == (400, "invalid_request_error", "model 'nope' is not available", "model")
    assert sync_seen["html"] == (502, "http_error", "<html>bad gateway</html>", None)


def test_both_clients_give_up_after_max_reconnects():
    def always_drop(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=Body([], drop=True))

    with Client("http://gw", max_reconnects=2, transport=httpx.MockTransport(always_drop)) as client:
        with pytest.raises(ClientError, match="stream dropped 3 times in a row"):
            list(client.stream(JOB))

    async def run() -> None:
        async with AsyncClient("http://gw", max_reconnects=2, transport=httpx.MockTransport(always_drop)) as client:
            with pytest.raises(ClientError, match="stream dropped 3 times in a row"):
                [event async for event in client.stream(JOB)]

    asyncio.run(run())
