"""`tokenrelay api --workers N`: N gateway processes on one port, each with its own relay."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

import httpx
import pytest

from tokenrelay import Client
from tokenrelay.cli.embedded import free_port

from ..support.processes import Process, stack_env, start_worker, wait_for_workers, wait_until
from ..support.streams import signature, token_indexes

PROCESSES = 2
TOKENS = 40


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(child) for child in text.split()]


def _connections_on_port(pid: int, port: int) -> int:
    """Established TCP connections of `pid` whose local port is `port` (clients it serves)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        if int(parts[1].rsplit(":", 1)[1], 16) == port and parts[3] == "01" and parts[9] in inodes:
            count += 1
    return count


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/ready", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture
def multi_process_stack(redis_server, isolated_settings):
    env = stack_env(redis_server.url, **isolated_settings)
    worker = start_worker(env, name="processes-worker")
    port = free_port()
    gateway = Process("gateway-processes", [sys.executable, "-m", "tokenrelay", "api", "--workers", str(PROCESSES),
                                            "--port", str(port)], env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: len(_children(gateway.pid)) == PROCESSES, timeout_s=20, message="gateway processes")
        wait_for_workers(url, 1)
        yield {"url": url, "port": port, "gateway": gateway}
    finally:
        gateway.stop()
        worker.stop()


def test_readers_on_different_processes_see_identical_sequences(multi_process_stack):
    url, port, parent = multi_process_stack["url"], multi_process_stack["port"], multi_process_stack["gateway"]
    with Client(url) as client:
        job = client.submit("many processes", params={"max_tokens": TOKENS, "tokens_per_second": 20})
    results: dict[int, list] = {}
    joined = threading.Barrier(2)

    def read(number: int) -> None:
        with Client(url) as reader:  # one client each: its own TCP connection
            events = []
            for event in reader.stream(job["id"]):
                events.append(event)
                if number == 0 and len(events) == 3:
                    joined.wait(30)  # hold here while the test counts connections per process
            results[number] = events

    threads = [threading.Thread(target=read, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    joined.wait(30)
    # With 16 connections spread by the kernel, both processes serve some of them.
    per_process = wait_until(lambda: (counts := [_connections_on_port(c, port) for c in _children(parent.pid)])
                             and sum(counts) >= 16 and counts, timeout_s=10, message="16 readers connected")
    for thread in threads:
        thread.join(30)
    assert all(count > 0 for count in per_process), per_process
    assert len(results) == 16
    first = results[0]
    assert token_indexes(first) == list(range(TOKENS))
    assert first[-1].event == "end" and first[-1].data["status"] == "succeeded"
    for events in results.values():
        assert signature(events) == signature(first)


def test_a_process_that_dies_is_replaced_and_the_port_keeps_serving(multi_process_stack):
    url, parent = multi_process_stack["url"], multi_process_stack["gateway"]
    victim = _children(parent.pid)[0]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: victim not in _children(parent.pid) and len(_children(parent.pid)) == PROCESSES,
               timeout_s=20, message="a new gateway process")
    wait_until(lambda: _ready(url), timeout_s=20, message="/ready")
    for _ in range(10):  # new connections, spread over both processes: every one answers
        with Client(url) as client:
            job = client.submit("after a crash", params={"max_tokens": 5, "tokens_per_second": 0})
            assert token_indexes(list(client.stream(job["id"]))) == list(range(5))


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def test_each_process_has_a_session_of_its_own_and_stops_when_the_parent_dies(multi_process_stack):
    parent = multi_process_stack["gateway"]
    children = _children(parent.pid)
    # Linux shares CPU between sessions: in the parent's one session, N processes would share one share.
    assert all(os.getsid(child) == child for child in children), [(c, os.getsid(c)) for c in children]
    os.kill(parent.pid, signal.SIGKILL)  # no forwarding of signals now: the processes must stop by themselves
    wait_until(lambda: not any(_running(child) for child in children), timeout_s=30,
               message="gateway processes stopped after their parent died")
