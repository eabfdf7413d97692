"""Idle streams (a queued job: no events for a long time): one task each, released at once when the
client leaves, and kept open by the process's one keepalive timer."""

from __future__ import annotations

import asyncio
import socket
import time

from api.direct_write import SCOPE_KEY
from tokenrelay.core.settings import Settings

from ..support.processes import wait_until
from .helpers import submit
from .in_thread_gateway import InThreadGateway

STREAMS = 30


def _open_idle_stream(port: int, job_id: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(f"GET /v1/jobs/{job_id}/stream HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    sock.settimeout(10)
    received = b""
    while b"retry: 1000" not in received:
        chunk = sock.recv(65536)
        assert chunk, "the stream closed early"
        received += chunk
    return sock


def _awaited_code(cycle) -> list[str]:
    """file:function of each coroutine the request task of `cycle` awaits, outermost first."""
    task = next(t for t in asyncio.all_tasks() if t.get_coro().cr_frame.f_locals.get("self") is cycle)
    layers, coroutine = [], task.get_coro()
    while hasattr(coroutine, "cr_code"):
        layers.append(f"{coroutine.cr_code.co_filename}:{coroutine.cr_code.co_name}")
        coroutine = coroutine.cr_await
    return layers


def test_idle_streams_cost_one_task_each_and_are_released_when_the_client_leaves(redis_server, fault_settings):
    # No worker: the job stays queued and its streams stay silent. Keepalives far away (60 s), so only
    # the disconnect itself can release the readers.
    settings = Settings(redis_url=redis_server.url, **{**fault_settings, "keepalive_s": 60})
    with InThreadGateway(settings) as gateway:
        job_id = submit(gateway.url, {"model": "demo", "prompt": "nobody runs me"})
        # Idle as after any job: a process keeps its subscriber connection (its reader task and watchdog)
        # once it has followed one, so the baseline comes after a first stream came and went.
        first = _open_idle_stream(gateway.port, job_id)
        wait_until(lambda: gateway.readers() == (1, 1, 1), message="first stream live")
        first.close()
        wait_until(lambda: gateway.readers() == (0, 0, 0) and gateway.subscriber_running(), timeout_s=5,
                   message="first stream released")
        idle_tasks = gateway.tasks()
        sockets = [_open_idle_stream(gateway.port, job_id) for _ in range(STREAMS)]
        wait_until(lambda: gateway.readers() == (STREAMS, 1, STREAMS), message="readers joined")
        # One task per stream (the request's own): no disconnect listener, no timer task. Give or take
        # the gateway's own periodic tasks (outbox sweep, a submit's background send), which may be
        # running or not at either count; two tasks per stream would be 30 more.
        extra = gateway.tasks() - idle_tasks
        assert STREAMS - 2 <= extra <= STREAMS + 2, extra
        closed_at = time.monotonic()
        for sock in sockets:
            sock.close()
        wait_until(lambda: gateway.readers() == (0, 0, 0), timeout_s=5, message="idle readers released")
        assert time.monotonic() - closed_at < 5
        wait_until(lambda: gateway.tasks() <= idle_tasks, timeout_s=5, message="tasks back to idle")


def test_a_silent_stream_gets_keepalives_from_the_shared_timer(redis_server, fault_settings):
    settings = Settings(redis_url=redis_server.url, **{**fault_settings, "keepalive_s": 0.5})
    with InThreadGateway(settings) as gateway:
        job_id = submit(gateway.url, {"model": "demo", "prompt": "nobody runs me"})
        sock = _open_idle_stream(gateway.port, job_id)
        try:
            arrivals, received, started = [], b"", time.monotonic()
            while len(arrivals) < 3:
                chunk = sock.recv(65536)
                assert chunk, "the stream closed"
                received += chunk
                while b": keepalive\n\n" in received:
                    received = received.replace(b": keepalive\n\n", b"", 1)
                    arrivals.append(time.monotonic() - started)
            # Each after one to two periods of silence (generous bounds for a loaded machine).
            gaps = [b - a for a, b in zip([0.0, *arrivals], arrivals)]
            assert all(0.3 <= gap <= 3.0 for gap in gaps), gaps
        finally:
            sock.close()


def test_an_idle_stream_keeps_only_what_the_server_gave_it(redis_server, fault_settings):
    # The server keeps each connection's protocol and request scope for the whole life of its stream:
    # ten thousand idle streams hold ten thousand of each, so neither may carry what the app left behind.
    settings = Settings(redis_url=redis_server.url, **{**fault_settings, "keepalive_s": 60})
    with InThreadGateway(settings, as_served=True) as gateway:
        job_id = submit(gateway.url, {"model": "demo", "prompt": "nobody runs me"})
        sock = _open_idle_stream(gateway.port, job_id)
        try:
            wait_until(lambda: gateway.readers() == (1, 1, 1), message="reader joined")
            protocols = gateway.in_loop(lambda: [p for p in gateway.server.server_state.connections
                                                 if p.cycle is not None and not p.cycle.response_complete])
            assert len(protocols) == 1
            protocol = protocols[0]
            scope = protocol.cycle.scope
            assert scope["path"] == f"/v1/jobs/{job_id}/stream"
            assert scope[SCOPE_KEY] is protocol.cycle  # direct writes still offered to the stream
            assert scope["app"] is gateway.app  # a stream's frames may read `request.app` as they go
            left_by_the_app = {"router", "route", "endpoint", "path_params", "fastapi_middleware_astack",
                               "fastapi_inner_astack", "fastapi_function_astack", "fastapi"}
            assert not left_by_the_app & set(scope), sorted(scope)
            # Between the server and the response, only the server's own layers and the handoff: no
            # framework middleware waits on every idle stream.
            layers = gateway.in_loop(lambda: _awaited_code(protocol.cycle))
            assert [name for name in layers if "/fastapi/" in name or "/starlette/" in name] == [], layers
            assert layers[-1].endswith("api/event_stream.py:stream"), layers
            # CPython shares an instance dict's keys between instances up to 30 of them; past that each
            # connection's protocol carries a dict of its own (~1.5 KB).
            assert len(vars(protocol)) <= 30, sorted(vars(protocol))
        finally:
            sock.close()
        wait_until(lambda: gateway.readers() == (0, 0, 0), timeout_s=5, message="idle reader released")
