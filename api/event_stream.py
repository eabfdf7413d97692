"""The gateway's SSE response: one task per stream (the request's own), nothing per idle stream but a wait.

Deliberate choices (read before changing):
- Starlette's `StreamingResponse` runs the body in one task and waits for `http.disconnect` in a
  second (a task group per stream). Here the request's task writes the frames, and the server's
  `receive()` is stepped by hand from future callbacks (`DisconnectWatch`): when it answers
  `http.disconnect`, the watch cancels the request's task, and the response turns that one
  cancellation back into a normal end (`Task.uncancel`, as `asyncio.timeout` does). A client that
  leaves is released at once, idle or not, without a second task.
- The slot, the time limit and the first frame live here rather than in wrapping generators: each
  async generator layer is a frame kept alive for the whole life of every idle stream.
- Handed off (`StreamHandoff`): the route validates and admits the reader as any route does, then
  its response only registers itself, so FastAPI's routing, its exit stacks, the request and the
  inner middlewares all return and are freed; the outermost middleware streams. A trivial FastAPI
  route measured 23 KB per open stream under uvicorn, the same response outside it 13 KB. The
  scope goes back to what the server put in it: the server keeps it as long as the connection.
- Keepalives come from the relay's one timer per process (api/relay.py), not a timer per stream.
- An `outlet` (api/direct_write.py) is bound once the headers and the prelude are out, to the
  server's direct writer if it offers one, and unbound first thing when the stream ends: frames the
  relay writes through it never pass through this loop, so it also carries the `max_s` deadline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable

from starlette.responses import Response

from .direct_write import SCOPE_KEY, Outlet

log = logging.getLogger("tokenrelay.gateway")

HANDOFF = "tokenrelay.stream_handoff"  # scope key: where a response waits for StreamHandoff


class StreamHandoff:
    """The outermost middleware: streams the `EventStreamResponse` a route handed off, after the
    app (routing, dependencies, the other middlewares) has returned.

    Where several wrap one another, the outermost streams and the others only pass through: the
    gateway's server (api/server.py) wraps the whole app in one, so that not even the framework's own
    outer layers (FastAPI's error, telemetry and body-limit middlewares: a coroutine frame each) stay
    on an idle stream's stack; the app's own (api/app.py) serves it under any other server."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or HANDOFF in scope:
            await self.app(scope, receive, send)
            return
        handed_off: list[EventStreamResponse] = []
        server_scope = dict(scope)
        scope[HANDOFF] = handed_off  # a list: shared even by layers that copy the scope
        await self.app(scope, receive, send)
        if not handed_off:
            del scope[HANDOFF]
            return
        # The server keeps this very dict for the life of the connection. What the app added to it
        # (routing's matches, FastAPI's exit stacks and route context: ~3 KB) is of no use to the
        # stream: the scope goes back to what the server put there, in a table of that size
        # (a dict never shrinks on `del`; `clear` drops its table). Except the app itself: a
        # stream's frames may hold the request and read `request.app` (`scope["app"]`) as they go.
        app = scope.get("app")
        scope.clear()
        scope.update(server_scope)
        if app is not None:
            scope["app"] = app
        del server_scope, app  # this frame lives as long as the stream
        await handed_off.pop().stream(scope, receive, send)


class DisconnectWatch:
    """Calls `on_disconnect` once when `receive()` answers `http.disconnect`; no task of its own.

    The pending `receive()` coroutine is advanced each time the future it awaits completes, the way
    a task would advance it. `close()` drops it (its `finally` blocks run)."""

    __slots__ = ("_receive", "_pending", "_on_disconnect", "disconnected")

    def __init__(self, receive: Callable, on_disconnect: Callable[[], object]) -> None:
        self._receive = receive
        self._on_disconnect = on_disconnect
        self._pending = None
        self.disconnected = False

    def start(self) -> None:
        self._pending = self._receive()
        self._advance()

    def _advance(self, _done: object = None) -> None:
        while self._pending is not None:
            try:
                awaited = self._pending.send(None)
            except StopIteration as stop:
                if stop.value.get("type") == "http.disconnect":
                    self._pending = None
                    self.disconnected = True
                    self._on_disconnect()
                    return
                self._pending = self._receive()  # a request body message: ask again
                continue
            if awaited is None:  # a bare yield (sleep(0)): step again on the next loop turn
                asyncio.get_running_loop().call_soon(self._advance)
            else:
                awaited._asyncio_future_blocking = False
                awaited.add_done_callback(self._advance)
            return

    def close(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.close()


class EventStreamResponse(Response):
    """`text/event-stream` from an async iterator of SSE bytes (a Starlette `Response` in type only).

    `prelude` goes out first; after `max_s` the stream ends with `limit_frame` (checked at each
    chunk; keepalives bound the wait); `on_close` runs once, however the stream ends, even if
    the response never started. `quiet_errors`: exceptions of `frames` that end the stream cleanly
    (the client resumes with Last-Event-ID) instead of failing the request. `outlet`: bound to the
    server's direct writer while the response streams, for whoever produces `frames`.
    """

    media_type = "text/event-stream"

    def __init__(self, frames: AsyncIterator[bytes], *, headers: dict[str, str], prelude: bytes = b"",
                 max_s: float = float("inf"), limit_frame: bytes = b"", on_close: Callable[[], None] | None = None,
                 quiet_errors: tuple[type[BaseException], ...] = (), outlet: Outlet | None = None) -> None:
        self.frames = frames
        self.outlet = outlet
        self.prelude = prelude
        self.max_s, self.limit_frame = max_s, limit_frame
        self.on_close = on_close
        self.quiet_errors = quiet_errors
        self.status_code = 200
        self.background = None
        raw = {"content-type": "text/event-stream; charset=utf-8", **{k.lower(): v for k, v in headers.items()}}
        self.raw_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in raw.items()]

    def __del__(self) -> None:  # never called as an app (the client left first): release anyway
        self._close()

    def _unbind(self) -> None:
        if self.outlet is not None:
            self.outlet.unbind()

    def _close(self) -> None:
        on_close, self.on_close = self.on_close, None
        if on_close is not None:
            on_close()

    async def __call__(self, scope, receive, send) -> None:
        handoff = scope.get(HANDOFF)
        if handoff is not None:
            handoff.append(self)
            return
        await self.stream(scope, receive, send)

    async def stream(self, scope, receive, send) -> None:
        task = asyncio.current_task()
        watch = DisconnectWatch(receive, task.cancel)
        deadline = time.monotonic() + self.max_s
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            self.raw_headers = []  # out: not kept for the life of every idle stream
            watch.start()
            if self.prelude:
                await send({"type": "http.response.body", "body": self.prelude, "more_body": True})
            if self.outlet is not None:
                self.outlet.bind(scope.get(SCOPE_KEY), deadline)
            async for chunk in self.frames:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                if time.monotonic() >= deadline:
                    self._unbind()
                    await send({"type": "http.response.body", "body": self.limit_frame, "more_body": True})
                    break
            watch.close()  # the server reports the end of its own response as a disconnect too
            self._unbind()
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not watch.disconnected or task.uncancel() > 0:
                raise  # a cancellation from elsewhere (shutdown): not ours to swallow
        except OSError:
            pass  # the client is gone (ASGI 2.4 servers raise from send)
        except self.quiet_errors as exc:
            log.warning("stream cut short: %s", type(exc).__name__)
            watch.close()
            self._unbind()
            try:  # end the response cleanly, without `end`: the client resumes from its last event id
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            except OSError:
                pass
        finally:
            self._unbind()
            watch.close()
            self._close()
            await self.frames.aclose()
