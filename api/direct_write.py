"""Writing a stream's frames straight to its connection, so that a hub hands one event to a thousand
readers without waking a thousand tasks.

Deliberate choices (read before changing):
- The server offers it, per request: the gateway's uvicorn protocol (`with_direct_writes`) puts the
  request's uvicorn `RequestResponseCycle` in the ASGI scope under `SCOPE_KEY` (no object of its own:
  ten thousand idle streams hold one each). Any other server (plain uvicorn, h11, a test client)
  offers none, and every frame goes through the ASGI `send` as before.
- `Outlet` is one stream's link between its response and its relay reader: the response binds it to
  the cycle once its headers and first frame are out, and unbinds it when it ends, before anything
  else. `Outlet.offer` does what uvicorn's own `send` does for one body chunk of a chunked response,
  minus the waiting: it refuses (returns False) whenever `send` would wait or do anything else (the
  client's socket buffer is full, the client left, the response is not streaming yet or is over). A
  refused frame goes to the reader's queue and its task sends it through `send`, which waits for the
  socket to drain: a slow client is still cut off at `client_buffer_events`, never buffered without
  bound. It also refuses past the response's `max_s`, so the response's own loop sees the next frame
  and ends the stream.
- Direct writes bypass every ASGI middleware between the server and the response: none of the
  gateway's changes a response body (no compression), and the streams' frames are already final bytes.
- The relay writes through an outlet only while the reader's task is parked with nothing queued:
  nothing of that stream is then in flight, so frames keep their order (api/hubs.py, `Reader.push`).
"""

from __future__ import annotations

import time

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

SCOPE_KEY = "tokenrelay.direct_write"
# What `Outlet.offer` reads and writes on uvicorn's request cycle. Not a public API: a uvicorn that lacks
# any of them gets no direct writes (every frame goes through `send`), rather than a broken stream.
CYCLE_ATTRIBUTES = ("transport", "flow", "disconnected", "response_started", "response_complete", "chunked_encoding")


def _writable(cycle) -> bool:
    return all(hasattr(cycle, name) for name in CYCLE_ATTRIBUTES) and hasattr(cycle.flow, "write_paused")


def chunk_of(body: bytes) -> bytes:
    """`body` as one chunk of a chunked HTTP/1.1 response: what `Outlet.offer` writes."""
    return b"%x\r\n%b\r\n" % (len(body), body)


def with_direct_writes(protocol: type[HttpToolsProtocol]) -> type[HttpToolsProtocol]:
    """A subclass of uvicorn's httptools protocol `protocol` that offers each request's cycle for direct writes."""

    class DirectWriteProtocol(protocol):
        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            cycle = self.cycle
            # None or an earlier request's cycle when this one did not start one (an upgrade, a refusal).
            if cycle is not None and cycle.scope is self.scope and _writable(cycle):
                self.scope[SCOPE_KEY] = cycle

    return DirectWriteProtocol


class Outlet:
    """One stream's way to its connection, bound while its response streams (see the module's note)."""

    __slots__ = ("_cycle", "_deadline")

    def __init__(self) -> None:
        self._cycle = None  # uvicorn's RequestResponseCycle, while bound
        self._deadline = 0.0

    def bind(self, cycle, deadline: float) -> None:
        """`cycle`: what the server put under `SCOPE_KEY` (None: it offers no direct writes)."""
        self._cycle, self._deadline = cycle, deadline

    def unbind(self) -> None:
        self._cycle = None

    def offer(self, chunk: bytes) -> bool:
        """Write `chunk` (from `chunk_of`) now; False if it must go through the response's `send`."""
        cycle = self._cycle
        if (cycle is None or cycle.disconnected or cycle.flow.write_paused or not cycle.response_started
                or cycle.response_complete or cycle.chunked_encoding is not True or time.monotonic() >= self._deadline):
            return False
        cycle.transport.write(chunk)
        return True
