"""Properties that need a stack of the test's own: several gateways, killed workers, retention, queued jobs."""

from __future__ import annotations

import asyncio
import signal
import socket
import time

import httpx
import redis

from tokenrelay import AsyncClient, Client
from tokenrelay.sse import SSEParser

from ..support.processes import Stack, wait_until
from ..support.streams import signature, text_of, token_indexes


def test_reader_attached_to_a_queued_job_gets_the_whole_stream(redis_server, isolated_settings):
    with Stack(redis_server.url, isolated_settings, workers=1) as stack:
        stack.workers[0].stop()
        with Client(stack.url) as client:
            job = client.submit("waits in the queue", params={"max_tokens": 20, "tokens_per_second": 0})
            events: list = []

            async def read():
                async with AsyncClient(stack.url) as reader:
                    async for event in reader.stream(job["id"]):
                        events.append(event)

            async def scenario():
                task = asyncio.create_task(read())
                await asyncio.sleep(0.5)
                assert client.get(job["id"])["status"] == "queued" and not events
                await asyncio.to_thread(stack.add_worker)
                await asyncio.wait_for(task, 30)

            asyncio.run(scenario())
            assert events[0].event == "metadata" and token_indexes(events) == list(range(20))
            assert events[-1].data["status"] == "succeeded"


def test_cancel_of_a_queued_job_ends_its_stream_at_once(redis_server, isolated_settings):
    with Stack(redis_server.url, isolated_settings, workers=1) as stack:
        stack.workers[0].stop()
        with Client(stack.url) as client:
            job = client.submit("never runs", params={"max_tokens": 20})
            response = httpx.post(f"{stack.url}/v1/jobs/{job['id']}/cancel")
            assert response.status_code == 202 and response.json()["status"] == "cancelled"
            events = list(client.stream(job["id"]))
            assert [e.event for e in events] == ["end"] and events[0].data["status"] == "cancelled"
            stack.add_worker()
            wait_for_idle = time.monotonic() + 2
            while time.monotonic() < wait_for_idle:  # the worker that picks it up must not run it
                assert client.get(job["id"])["status"] == "cancelled"
                time.sleep(0.1)
            assert signature(list(client.stream(job["id"]))) == signature(events)


def test_two_gateways_serve_the_same_job_identically(redis_server, isolated_settings):
    with Stack(redis_server.url, isolated_settings, workers=1) as stack:
        second = stack.add_gateway()
        with Client(stack.url) as client:
            job = client.submit("two gateways", params={"max_tokens": 50, "tokens_per_second": 100})

        async def scenario():
            async def read(url):
                async with AsyncClient(url) as reader:
                    return [event async for event in reader.stream(job["id"])]
            return await asyncio.gather(read(stack.url), read(second), read(second))

        a, b, c = asyncio.run(scenario())
        assert token_indexes(a) == list(range(50))
        assert signature(a) == signature(b) == signature(c)


def _gateway_connections(redis_url: str, pid: int) -> int:
    client = redis.Redis.from_url(redis_url)
    try:
        return sum(1 for c in client.client_list() if c.get("name", "").endswith(f":{pid}")
                   and c["name"].startswith("tokenrelay-gateway"))
    finally:
        client.close()


def test_gateway_redis_connections_do_not_grow_with_readers(redis_server, isolated_settings):
    with Stack(redis_server.url, isolated_settings, workers=1) as stack:
        pid = stack.gateways[0].pid
        with Client(stack.url) as client:
            jobs = [client.submit(f"job {i}", params={"max_tokens": 30, "tokens_per_second": 10}) for i in range(4)]

        async def hold(readers: int) -> int:
            started = asyncio.Event()
            counts: list[int] = []

            async def read(job_id):
                async with AsyncClient(stack.url) as reader:
                    async for event in reader.stream(job_id):
                        if event.event == "token":
                            counts.append(1)
                            if len(counts) >= readers:
                                started.set()
                            await asyncio.wait_for(started.wait(), 30)
                            return

            tasks = [asyncio.create_task(read(jobs[i % len(jobs)]["id"])) for i in range(readers)]
            await asyncio.wait_for(started.wait(), 30)
            connections = await asyncio.to_thread(_gateway_connections, redis_server.url, pid)
            await asyncio.gather(*tasks)
            return connections

        with_two = asyncio.run(hold(2))
        with_two_hundred = asyncio.run(hold(200))
        assert with_two >= 2  # the pool and the shared reader
        assert with_two_hundred <= with_two


def test_a_reader_that_stops_reading_is_cut_off_and_resumes_without_loss(redis_server, isolated_settings):
    # Big tokens (the demo model echoes the prompt), so the flood outgrows the sockets' buffers.
    settings = {**isolated_settings, "client_buffer_events": 20, "max_message_chars": 10_000_000,
                "max_body_bytes": 12_000_000}
    prompt = " ".join(f"{i:05d}" + "x" * 400 for i in range(12_000))
    with Stack(redis_server.url, settings, workers=1) as stack:
        with Client(stack.url) as client:
            job = client.submit(prompt, params={"max_tokens": 12_000, "tokens_per_second": 0})
            host, port = stack.url.removeprefix("http://").split(":")
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect((host, int(port)))
            sock.sendall(f"GET /v1/jobs/{job['id']}/stream HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            wait_until(lambda: client.get(job["id"])["status"] == "succeeded", timeout_s=60, interval_s=0.1,
                       message="the job to finish while the reader sleeps")
            # Now read what the gateway kept for this reader: it must have cut the response short.
            sock.settimeout(5)
            raw = b""
            while True:
                try:
                    chunk = sock.recv(65536)
                except TimeoutError:
                    break
                if not chunk:
                    break
                raw += chunk
                if raw.endswith(b"0\r\n\r\n"):
                    break
            sock.close()
            body = raw.split(b"\r\n\r\n", 1)[1].decode(errors="replace")
            events = list(SSEParser().feed(_dechunk(body)))
            assert events and all(e.event != "end" for e in events), "a stalled reader must be disconnected"
            rest = list(client.stream(job["id"], last_event_id=events[-1].id))
            whole = list(client.stream(job["id"]))
            assert signature(events + rest) == signature(whole)
            assert token_indexes(whole) == list(range(12_000))


def _dechunk(body: str) -> str:
    out, rest = [], body
    while rest:
        size_line, _, rest = rest.partition("\r\n")
        try:
            size = int(size_line, 16)
        except ValueError:
            break
        if size == 0:
            break
        out.append(rest[:size])
        rest = rest[size + 2:]
    return "".join(out)


def test_worker_killed_mid_job_the_job_runs_again_with_reset(redis_server, isolated_settings):
    with Stack(redis_server.url, isolated_settings, workers=1) as stack:
        with Client(stack.url) as client:
            job = client.submit("survive a crash", params={"max_tokens": 40, "tokens_per_second": 20})
            events = []
            killed_at = recovered_at = None
            for event in client.stream(job["id"]):
                events.append(event)
                if killed_at is None and event.event == "token" and token_indexes(events)[-1] >= 5:
                    stack.workers[0].signal(signal.SIGKILL)
                    killed_at = time.monotonic()
                    stack.add_worker()
                if event.event == "reset":
                    recovered_at = time.monotonic()
            kinds = [e.event for e in events]
            assert kinds.count("reset") == 1 and kinds.count("end") == 1 and kinds[-1] == "end"
            reset_at = kinds.index("reset")
            assert events[reset_at].data == {"attempt": 2, "reason": "worker_lost"}
            assert events[reset_at + 1].event == "metadata" and events[reset_at + 1].data["attempt"] == 2
            final_attempt = events[reset_at:]
            assert token_indexes(final_attempt) == list(range(40))
            assert events[-1].data["status"] == "succeeded"
            # Ids: attempt 1's entries all sort before attempt 2's; nothing interleaves.
            attempts = [int(e.id.split("-")[0]) for e in events]
            assert attempts == sorted(attempts)
            record = client.get(job["id"])
            assert record["attempt"] == 2 and record["output"]["text"] == text_of(final_attempt)
            assert recovered_at - killed_at < 2 * 2 + 5  # lease (2 s in tests) + reaper + worker start


def test_finished_jobs_expire_after_retention(redis_server, isolated_settings):
    settings = {**isolated_settings, "retention_s": 1}
    with Stack(redis_server.url, settings, workers=1) as stack:
        with Client(stack.url) as client:
            job = client.submit("short lived", params={"max_tokens": 3, "tokens_per_second": 0})
            list(client.stream(job["id"]))
            wait_until(lambda: httpx.get(f"{stack.url}/v1/jobs/{job['id']}").status_code == 404, timeout_s=10,
                       interval_s=0.2, message="the job to expire")
            response = httpx.get(f"{stack.url}/v1/jobs/{job['id']}/stream")
            assert response.status_code == 404
            assert response.json()["error"]["type"] == "not_found_error"
