"""A gateway served in the test's own process (a real uvicorn server in a thread), so a test can count its
asyncio tasks, readers and subscriber connection while real workers and Redis run beside it."""

from __future__ import annotations

import asyncio
import threading

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from api.app import create_app
from api.direct_write import with_direct_writes
from api.server import gateway_config
from tokenrelay.cli.embedded import free_port
from tokenrelay.core.settings import Settings

from ..support.processes import wait_until


class InThreadGateway:
    """`direct_writes`: served as the product serves it, live frames going straight to the connections;
    otherwise by plain uvicorn, every frame through the ASGI `send`. `as_served`: configured as the
    gateway's server configures it (api/server.py: connection limits, direct writes, handoff)."""

    def __init__(self, settings: Settings, *, direct_writes: bool = False, as_served: bool = False) -> None:
        self.app = create_app(settings)
        self.port = free_port()
        options = {"host": "127.0.0.1", "port": self.port, "log_level": "warning", "lifespan": "on"}
        if as_served:
            config = gateway_config(settings, self.app, **options)
        else:
            http = with_direct_writes(HttpToolsProtocol) if direct_writes else HttpToolsProtocol
            config = uvicorn.Config(self.app, http=http, **options)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "InThreadGateway":
        self.thread.start()
        wait_until(lambda: self.server.started, timeout_s=20, message="in-thread gateway")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)

    def in_loop(self, function):
        loop = self.app.state.relay._task.get_loop()
        async def call():
            return function()
        return asyncio.run_coroutine_threadsafe(call(), loop).result(5)

    def tasks(self) -> int:
        return self.in_loop(lambda: len(asyncio.all_tasks()))

    def subscriber_running(self) -> bool:
        """The process's subscriber connection is open (it stays once the process followed a job)."""
        return self.in_loop(lambda: any(task.get_name().startswith("tokenrelay-sub-") for task in asyncio.all_tasks()))

    def readers(self) -> tuple[int, int, int]:
        state = self.app.state
        return self.in_loop(lambda: (state.relay.reader_count, len(state.relay.hubs), sum(state.reader_slots.open.values())))
