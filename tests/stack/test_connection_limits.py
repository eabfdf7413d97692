"""Limits enforced before a request reaches the app, tested with raw sockets against a real gateway:
header bytes (431), time to send the headers (408 and close), open connections per process (503)."""

from __future__ import annotations

import json
import socket
import threading
import time
from urllib.parse import urlsplit

import pytest

from tokenrelay import Client

from ..support.processes import start_gateway, stack_env


def _connect(url: str) -> socket.socket:
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
    return sock


def _send(sock: socket.socket, data: bytes) -> None:
    """Send what the server takes; a server that refused early closes the socket under us."""
    try:
        sock.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass


def _read_until_closed(sock: socket.socket, timeout_s: float = 15.0) -> bytes:
    sock.settimeout(timeout_s)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received


def _status_and_error(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return status, error


def test_a_one_megabyte_header_is_refused_with_431(gateway_url):
    sock = _connect(gateway_url)
    _send(sock, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 1_000_000 + b"\r\n\r\n")
    status, error = _status_and_error(_read_until_closed(sock))
    assert status == 431
    assert error["param"] == "max_header_bytes" and "16384 bytes" in error["message"]


def test_many_small_headers_count_together(gateway_url):
    sock = _connect(gateway_url)
    headers = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 100) for i in range(200))  # ~22 KB
    _send(sock, b"GET /health HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    status, _ = _status_and_error(_read_until_closed(sock))
    assert status == 431


def test_headers_under_the_limit_pass_on_a_kept_alive_connection(gateway_url):
    sock = _connect(gateway_url)
    request = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 12_000 + b"\r\n\r\n"
    for _ in range(3):  # the count starts again with each request on the connection
        _send(sock, request)
        sock.settimeout(10)
        answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200"), answer[:100]
    sock.close()


def test_a_trickled_header_is_closed_after_header_timeout(gateway_url):
    sock = _connect(gateway_url)
    _send(sock, b"GET /health HTTP/1.1\r\nHost: x\r\n")
    started = time.monotonic()
    closed_after = None
    sock.settimeout(0.5)
    while time.monotonic() - started < 20:
        try:
            sock.sendall(b"X")  # one byte of a header every half second: never complete
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except (BrokenPipeError, ConnectionResetError):
            chunk = b""
        if chunk:
            assert chunk.startswith(b"HTTP/1.1 408"), chunk[:100]
            chunk = _read_until_closed(sock, timeout_s=5)
        if not chunk:
            closed_after = time.monotonic() - started
            break
    assert closed_after is not None, "the connection was still open after 20 s"
    assert 4.0 <= closed_after <= 12.0, closed_after  # header_timeout_s is 5 by default


@pytest.fixture
def limited_gateway(redis_server, isolated_settings):
    env = stack_env(redis_server.url, **{**isolated_settings, "max_connections": 20, "header_timeout_s": 1})
    process, url = start_gateway(env)
    yield url
    process.stop()


def test_connections_past_max_connections_are_refused(limited_gateway):
    idle = [_connect(limited_gateway) for _ in range(20)]
    time.sleep(0.3)
    extra = _connect(limited_gateway)
    status, error = _status_and_error(_read_until_closed(extra))
    assert status == 503 and error["type"] == "overloaded" and error["param"] == "max_connections"
    for sock in idle:
        sock.close()
    time.sleep(0.3)
    sock = _connect(limited_gateway)  # room again
    _send(sock, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert sock.recv(65536).startswith(b"HTTP/1.1 200")


def test_a_stream_longer_than_header_timeout_is_not_cut(limited_gateway):
    # header_timeout_s is 1 on this gateway. No worker serves its queue: the stream stays open on a
    # queued job until the cancel, 2.5 s later, ends it.
    with Client(limited_gateway) as client:
        job = client.submit("hello", params={"max_tokens": 5})
        events: list = []
        reader = threading.Thread(target=lambda: events.extend(client.stream(job["id"])))
        reader.start()
        time.sleep(2.5)
        client.cancel(job["id"])
        reader.join(10)
    assert [event.event for event in events] == ["end"]
    assert events[0].data["status"] == "cancelled"
