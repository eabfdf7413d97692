"""A reader that behaves like a browser's EventSource behind a load balancer: whatever happens, it
reconnects (to the next gateway in its list) with Last-Event-ID until it gets `end` or its deadline."""

from __future__ import annotations

import threading
import time

import httpx

from tokenrelay.events import Event
from tokenrelay.sse import SSEParser

RECONNECT_DELAY_S = 0.1


class ResilientReader:
    def __init__(self, urls: list[str], job_id: str, deadline_s: float = 60.0, headers: dict | None = None) -> None:
        self.urls = list(urls)
        self.job_id = job_id
        self.deadline_s = deadline_s
        self.headers = headers or {}
        self.events: list[Event] = []
        self.connections = 0
        self.refusals: list[int] = []  # HTTP statuses of refused reconnects
        self.failure: str | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def last_id(self) -> str | None:
        return next((e.id for e in reversed(self.events) if e.id), None)

    @property
    def ended(self) -> bool:
        return bool(self.events) and self.events[-1].event == "end"

    def start(self) -> "ResilientReader":
        self._thread.start()
        return self

    def join(self) -> list[Event]:
        self._thread.join(self.deadline_s + 15)
        assert not self._thread.is_alive(), "reader still running after its deadline"
        assert self.ended, f"reader never got `end` ({self.failure}; {len(self.events)} events)"
        return self.events

    def _run(self) -> None:
        deadline = time.monotonic() + self.deadline_s
        turn = 0
        while not self.ended and time.monotonic() < deadline:
            url = self.urls[turn % len(self.urls)]
            try:
                self._read_once(url, deadline)
            except (httpx.HTTPError, OSError) as exc:
                self.failure = type(exc).__name__
                turn += 1  # try the next gateway, as a load balancer would after a failure
            if not self.ended:
                time.sleep(RECONNECT_DELAY_S)
        if not self.ended and self.failure is None:
            self.failure = "deadline"

    def _read_once(self, url: str, deadline: float) -> None:
        headers = dict(self.headers)
        if self.last_id:
            headers["Last-Event-ID"] = self.last_id
        timeout = httpx.Timeout(5.0, read=max(1.0, min(20.0, deadline - time.monotonic())))
        with httpx.stream("GET", f"{url}/v1/jobs/{self.job_id}/stream", headers=headers, timeout=timeout) as response:
            self.connections += 1
            if response.status_code != 200:
                response.read()
                self.refusals.append(response.status_code)
                self.failure = f"HTTP {response.status_code}"
                if response.status_code < 500:
                    raise httpx.HTTPStatusError("refused", request=response.request, response=response)
                return
            parser = SSEParser()
            for text in response.iter_text():
                if time.monotonic() > deadline:  # keepalives keep a stalled stream open: give up on it
                    self.failure = f"deadline, stalled on {url} after {self.last_id}"
                    return
                for event in parser.feed(text):
                    self.events.append(event)
                    if event.event == "end":
                        return
