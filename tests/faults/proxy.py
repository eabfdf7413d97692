"""A TCP proxy for fault tests, on loopback: pass, delay, blackhole or reset the traffic to a server.

- pass: bytes flow both ways.
- delay: each chunk waits `delay_s` before it is forwarded (order kept); with `replies_only`, only
  the server's answers wait (commands arrive at once, their replies come late).
- blackhole: connections stay open but nothing flows; bytes are held, as TCP would keep
  retransmitting them, and flow again once the mode is back to pass (a healed partition).
- reset: every connection is closed with a TCP RST, and new ones are reset at once.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading

from tokenrelay.cli.embedded import free_port

CHUNK = 65536


class FaultProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.mode = "pass"
        self.delay_s = 0.0
        self.replies_only = False
        self._loop = asyncio.new_event_loop()
        self._flowing: asyncio.Event | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)
        self._server: asyncio.AbstractServer | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "FaultProxy":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(5)
        return self

    def stop(self) -> None:
        async def close() -> None:
            self._server.close()
            for writer in list(self._writers):
                _reset(writer)
        asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def set_mode(self, mode: str, delay_s: float = 0.0, replies_only: bool = False) -> None:
        assert mode in ("pass", "delay", "blackhole", "reset")

        def apply() -> None:
            self.mode, self.delay_s, self.replies_only = mode, delay_s, replies_only
            if mode == "blackhole":
                self._flowing.clear()
            else:
                self._flowing.set()
            if mode == "reset":
                for writer in list(self._writers):
                    _reset(writer)
        self._loop.call_soon_threadsafe(apply)

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _start(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if self.mode == "reset":
            _reset(client_writer)
            return
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            _reset(client_writer)
            return
        self._writers |= {client_writer, server_writer}
        await asyncio.gather(self._pump(client_reader, server_writer, reply=False),
                             self._pump(server_reader, client_writer, reply=True), return_exceptions=True)
        for writer in (client_writer, server_writer):
            self._writers.discard(writer)
            writer.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, reply: bool) -> None:
        try:
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    break
                await self._flowing.wait()
                if self.mode == "delay" and self.delay_s and (reply or not self.replies_only):
                    await asyncio.sleep(self.delay_s)
                writer.write(data)
                await writer.drain()
        finally:
            if not writer.is_closing():
                writer.close()


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:  # linger 0: close() sends RST instead of FIN
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()
