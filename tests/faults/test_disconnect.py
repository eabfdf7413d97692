"""Scenario 10: clients that disconnect are released at once: no leaked readers, tasks or Redis commands.

The gateway runs in this process (a real uvicorn server in a thread) so the test can count its
asyncio tasks and readers; the worker and Redis are real processes.
"""

from __future__ import annotations

import os
import socket
import time

import pytest
import redis

from tokenrelay.core.settings import Settings

from ..support.processes import stack_env, start_worker, wait_for_workers, wait_until
from .helpers import SLOW_JOB, submit
from .in_thread_gateway import InThreadGateway

READERS = 40


def _gateway_clients(redis_url: str) -> list[dict]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        return [c for c in client.client_list() if c.get("name", "").startswith("tokenrelay-gateway")
                and c["name"].endswith(f":{os.getpid()}")]
    finally:
        client.close()


def _open_stream(port: int, job_id: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(f"GET /v1/jobs/{job_id}/stream HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    sock.settimeout(10)
    received = b""
    while b"event: token" not in received:
        chunk = sock.recv(65536)
        assert chunk, "the stream closed early"
        received += chunk
    return sock


@pytest.mark.parametrize("direct_writes", [False, True], ids=["asgi-send", "direct-writes"])
def test_disconnected_clients_are_released_at_once(redis_server, fault_settings, capsys, direct_writes):
    settings = Settings(redis_url=redis_server.url, **{k: v for k, v in fault_settings.items()})
    worker = start_worker(stack_env(redis_server.url, **fault_settings), name="worker-disconnect")
    try:
        with InThreadGateway(settings, direct_writes=direct_writes) as gateway:
            wait_for_workers(gateway.url, 1)
            job_id = submit(gateway.url, {**SLOW_JOB, "params": {"max_tokens": 400, "tokens_per_second": 20}})
            wait_until(lambda: gateway.readers() == (0, 0, 0))
            # Idle as after any job: a process keeps its subscriber connection (and its reader task)
            # once it has followed one, so the baseline comes after a first reader came and went.
            first = _open_stream(gateway.port, job_id)
            wait_until(lambda: gateway.readers() == (1, 1, 1), message="first reader live")
            first.close()
            wait_until(lambda: gateway.readers() == (0, 0, 0) and gateway.subscriber_running(), timeout_s=5,
                       message="first reader released")
            idle_tasks = gateway.tasks()
            idle_clients = _gateway_clients(redis_server.url)
            sockets = [_open_stream(gateway.port, job_id) for _ in range(READERS)]
            assert gateway.readers() == (READERS, 1, READERS)
            busy_tasks = gateway.tasks()
            assert busy_tasks > idle_tasks
            closed_at = time.monotonic()
            for sock in sockets:
                sock.close()
            wait_until(lambda: gateway.readers() == (0, 0, 0), timeout_s=5, message="readers released")
            released_s = time.monotonic() - closed_at
            wait_until(lambda: gateway.tasks() <= idle_tasks, timeout_s=5, message="tasks back to idle")
            # Redis: the same connections as before (the pool, the relay's reads, the subscriber), and none
            # left running a command for a reader that is gone.
            clients = _gateway_clients(redis_server.url)
            assert len(clients) == len(idle_clients)
            blocked = [c for c in clients if c["cmd"] not in ("xread", "client|list", "NULL", "ping", "evalsha")]
            assert sum(1 for c in clients if c["cmd"] == "xread") <= 1, clients
            assert not [c for c in blocked if c["flags"] == "b"]
    finally:
        worker.stop()
    with capsys.disabled():
        print(f"\n[client disconnect] {READERS} readers released {released_s * 1000:.0f} ms after their sockets "
              f"closed; tasks {idle_tasks} idle, {busy_tasks} with readers, back to <= {idle_tasks}")
