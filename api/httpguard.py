"""Limits on a connection before any request reaches the app: header bytes, time to send the headers,
open connections per process. A uvicorn protocol (the httptools one that `uvicorn[standard]` uses).

Deliberate choices (read before changing):
- httptools has no cap on header size: it buffers a header line whole, however long. Bytes are
  counted here before they reach the parser, up to the blank line that ends the headers, so a
  client can never make the process hold more than `max_header_bytes` of an unfinished request.
- The header clock starts with a connection and again with the first byte of each later request
  on it; it stops when the headers are complete. A response that streams for an hour is never
  cut by it (uvicorn's own keep-alive timeout covers idle connections between requests).
- Refusals are written straight to the socket (the app never runs) and close the connection.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEADERS_END = b"\r\n\r\n"


@dataclass(frozen=True)
class ConnectionLimits:
    max_header_bytes: int
    header_timeout_s: float
    max_connections: int


def _raw_response(status: int, reason: str, error_type: str, message: str, param: str) -> bytes:
    body = json.dumps({"error": {"message": message, "type": error_type, "param": param, "code": None}}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n")
    if status == 503:
        head += "retry-after: 2\r\n"
    return head.encode() + b"\r\n" + body


def guarded_protocol(limits: ConnectionLimits) -> type[HttpToolsProtocol]:
    """An HttpToolsProtocol class that enforces `limits`; pass it as uvicorn's `http`."""
    too_large = _raw_response(431, "Request Header Fields Too Large", "request_too_large",
                              f"request headers are larger than {limits.max_header_bytes} bytes",
                              "max_header_bytes")
    too_slow = _raw_response(408, "Request Timeout", "request_timeout",
                             f"request headers not received within {limits.header_timeout_s:g} s", "header_timeout_s")
    too_many = _raw_response(503, "Service Unavailable", "overloaded",
                             f"this gateway process has {limits.max_connections} open connections; retry shortly",
                             "max_connections")

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        # Slots, not instance attributes: uvicorn's protocol already sets 28, and CPython shares an
        # instance dict's keys between instances only up to 30; past that every connection carries a
        # dict of its own (~1.5 KB, for as long as a stream stays open).
        __slots__ = ("_in_headers", "_header_bytes", "_tail", "_header_timer")

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._in_headers = True
            self._header_bytes = 0
            self._tail = b""
            self._header_timer: asyncio.TimerHandle | None = None
            if len(self.connections) > limits.max_connections:
                self._refuse(too_many)
                return
            self._arm_header_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_header_timer()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._in_headers:
                if self._header_timer is None:  # the first byte of a later request on this connection
                    self._arm_header_timer()
                seen = self._tail + data
                end = seen.find(HEADERS_END)
                counted = len(data) if end < 0 else max(0, end + len(HEADERS_END) - len(self._tail))
                self._header_bytes += counted
                self._tail = seen[-(len(HEADERS_END) - 1):]
                if self._header_bytes > limits.max_header_bytes:
                    self._refuse(too_large)
                    return
            super().data_received(data)

        def on_headers_complete(self) -> None:
            self._in_headers = False
            self._disarm_header_timer()
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            # The next bytes on this connection start a new request's headers.
            self._in_headers, self._header_bytes, self._tail = True, 0, b""

        def _arm_header_timer(self) -> None:
            self._header_timer = self.loop.call_later(limits.header_timeout_s, self._headers_too_slow)

        def _disarm_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if self._in_headers:
                self._refuse(too_slow)

        def _refuse(self, response: bytes) -> None:
            self._disarm_header_timer()
            if not self.transport.is_closing():
                self.transport.write(response)
                self.transport.close()

    return GuardedHttpToolsProtocol
