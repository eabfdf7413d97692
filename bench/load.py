"""A lean load generator: raw asyncio HTTP/1.1 clients reading SSE, stamping each event's arrival.

Written on sockets rather than httpx so that thousands of readers in one process measure the servers,
not the client library.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field


class Refused(Exception):
    """The server answered with an error status instead of a stream."""

    def __init__(self, status: int, retry_after_s: float, code: str | None = None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.retry_after_s = retry_after_s
        self.code = code  # the error body's `code` (or `type` when it has none)


@dataclass
class Reading:
    """What one reader saw."""

    tokens: int = 0  # tokens delivered (a token event may carry several: `count`)
    events: int = 0
    first_token_at: float | None = None
    ended_at: float | None = None
    end_status: str | None = None
    lags_s: list[float] = field(default_factory=list)  # arrival - production (`ts`) per token event
    ids: list[str] = field(default_factory=list)
    refusals: int = 0  # 429/503 answers before the job was admitted (each retried after Retry-After)


async def request(host: str, port: int, method: str, path: str, body: bytes | None = None,
                  headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """A plain request/response (for submits); one connection each."""
    status, _, data = await exchange(host, port, method, path, body, headers)
    return status, data


async def exchange(host: str, port: int, method: str, path: str, body: bytes | None = None,
                   headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """A request/response with the response's headers."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(_head(method, path, body, headers) + (body or b""))
        status, response_headers = await _read_head(reader)
        if response_headers.get("transfer-encoding") == "chunked":
            data = b"".join([chunk async for chunk in _chunks(reader)])
        else:
            data = await reader.readexactly(int(response_headers.get("content-length", "0")))
        return status, response_headers, data
    finally:
        writer.close()


async def post_json(host: str, port: int, path: str, payload: dict) -> tuple[int, dict]:
    status, data = await request(host, port, "POST", path, json.dumps(payload).encode(),
                                 {"content-type": "application/json"})
    return status, json.loads(data) if data else {}


async def read_sse(host: str, port: int, path: str, *, body: dict | None = None, keep_ids: bool = False,
                   connected: asyncio.Event | None = None, reading: Reading | None = None) -> Reading:
    """Follow one SSE response (of a GET, or of a POST of `body`) to its end; tokens' lag is measured
    against their `ts` stamp. Pass `reading` to watch the counts while it runs."""
    reading = reading if reading is not None else Reading()
    reader, writer = await asyncio.open_connection(host, port)
    try:
        if body is None:
            writer.write(_head("GET", path, None, {"accept": "text/event-stream"}))
        else:
            data = json.dumps(body).encode()
            writer.write(_head("POST", path, data, {"accept": "text/event-stream",
                                                    "content-type": "application/json"}) + data)
        status, headers = await _read_head(reader)
        if connected is not None:
            connected.set()
        if status != 200:
            raise Refused(status, float(headers.get("retry-after", "1")), error_code(
                await reader.readexactly(int(headers.get("content-length", "0")))))
        buffer = b""
        source = _chunks(reader) if headers.get("transfer-encoding") == "chunked" else _raw(reader)
        async for chunk in source:
            arrived = time.time()
            buffer += chunk
            *frames, buffer = buffer.split(b"\n\n")
            for frame in frames:
                if _take(frame, reading, arrived, keep_ids):
                    return reading
        return reading
    finally:
        writer.close()


def error_code(data: bytes) -> str | None:
    try:
        error = json.loads(data)["error"]
    except (ValueError, KeyError, TypeError):
        return None
    return error.get("code") or error.get("type")


def _take(frame: bytes, reading: Reading, arrived: float, keep_ids: bool) -> bool:
    """Account one SSE frame; True once the stream is over."""
    event, data, event_id = b"message", None, None
    for line in frame.split(b"\n"):
        if line.startswith(b"data:"):
            data = line[5:].strip()
        elif line.startswith(b"event:"):
            event = line[6:].strip()
        elif line.startswith(b"id:"):
            event_id = line[3:].strip()
    if data is None:
        return False
    if data == b"[DONE]":
        reading.ended_at, reading.end_status = arrived, reading.end_status or "succeeded"
        return True
    reading.events += 1
    if keep_ids and event_id:
        reading.ids.append(event_id.decode())
    if event in (b"token", b"message"):
        payload = json.loads(data)
        reading.tokens += payload.get("count", 1)
        if reading.first_token_at is None:
            reading.first_token_at = arrived
        if "ts" in payload:
            reading.lags_s.append(arrived - payload["ts"])
    elif event == b"end":
        reading.ended_at, reading.end_status = arrived, json.loads(data).get("status")
        return True
    return False


def _head(method: str, path: str, body: bytes | None, headers: dict[str, str] | None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "host: bench"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body is not None:
        lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return status, headers


async def _chunks(reader: asyncio.StreamReader):
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return
        data = await reader.readexactly(size + 2)
        yield data[:-2]


async def _raw(reader: asyncio.StreamReader):
    while True:
        data = await reader.read(65536)
        if not data:
            return
        yield data
