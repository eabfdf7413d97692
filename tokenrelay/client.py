"""Python clients of a tokenrelay gateway: `Client` (sync) and `AsyncClient`.

`stream()` yields typed events and reconnects by itself after a dropped connection, resuming
with Last-Event-ID, until the job's `end` event.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx

from .errors import ClientError
from .events import Event
from .sse import SSEParser

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
RECONNECT_DELAYS_S = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0)
STREAM_READ_TIMEOUT_S = 60.0  # above the gateway's 15 s keepalive


def _job_body(prompt: str | None, messages: list[dict] | None, model: str, params: dict | None,
              metadata: dict | None) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model}
    if messages is not None:
        body["messages"] = messages
    else:
        body["prompt"] = prompt
    if params:
        body["params"] = params
    if metadata:
        body["metadata"] = metadata
    return body


def _graph_body(graph: str, graph_input: dict | None, stream_mode: list[str] | None, model: str | None,
                params: dict | None, metadata: dict | None) -> dict[str, Any]:
    body: dict[str, Any] = {"graph": graph, "input": graph_input or {}}
    for name, value in (("stream_mode", stream_mode), ("model", model), ("params", params), ("metadata", metadata)):
        if value:
            body[name] = value
    return body


def _filter_query(filters: dict[str, Any] | None) -> dict[str, str]:
    """Stream filters as query parameters: lists become comma-separated, booleans lowercase."""
    query = {}
    for name, value in (filters or {}).items():
        if isinstance(value, bool):
            query[name] = "true" if value else "false"
        elif isinstance(value, (list, tuple, set)):
            query[name] = ",".join(value)
        elif value is not None:
            query[name] = str(value)
    return query


def _raise_for_error(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        error = response.json()["error"]
        raise ClientError(response.status_code, error.get("type", "error"), error.get("message", ""),
                          error.get("param"))
    except (ValueError, KeyError, TypeError):
        raise ClientError(response.status_code, "http_error", response.text[:200]) from None


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


class _Resume:
    """Where a stream stands, and whether to try again after a drop."""

    def __init__(self, last_event_id: str | None, max_reconnects: int) -> None:
        self.last_event_id = last_event_id
        self.max_reconnects = max_reconnects
        self.failures = 0
        self.done = False

    def headers(self) -> dict[str, str]:
        return {"Last-Event-ID": self.last_event_id} if self.last_event_id else {}

    def seen(self, event: Event) -> None:
        if event.id is not None:
            self.last_event_id = event.id
        self.failures = 0
        self.done = event.is_end

    def next_delay(self, error: Exception | None) -> float:
        """Delay before reconnecting; raises once reconnects are used up."""
        self.failures += 1
        if self.failures > self.max_reconnects:
            raise ClientError(0, "stream_lost", f"stream dropped {self.failures} times in a row") from error
        return RECONNECT_DELAYS_S[min(self.failures - 1, len(RECONNECT_DELAYS_S) - 1)]


class Client:
    def __init__(self, base_url: str = DEFAULT_BASE_URL, *, api_key: str | None = None, timeout_s: float = 30.0,
                 max_reconnects: int = 10, transport: httpx.BaseTransport | None = None) -> None:
        self._http = httpx.Client(base_url=base_url, headers=_headers(api_key), timeout=timeout_s,
                                  transport=transport)
        self.max_reconnects = max_reconnects

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def submit(self, prompt: str | None = None, *, messages: list[dict] | None = None, model: str = "demo",
               params: dict | None = None, metadata: dict | None = None) -> dict[str, Any]:
        response = self._http.post("/v1/jobs", json=_job_body(prompt, messages, model, params, metadata))
        _raise_for_error(response)
        return response.json()

    def submit_graph(self, graph: str, input: dict | None = None, *, stream_mode: list[str] | None = None,
                     model: str | None = None, params: dict | None = None,
                     metadata: dict | None = None) -> dict[str, Any]:
        """Run a registered graph; `stream_mode` takes LangGraph's modes (default ["messages"])."""
        body = _graph_body(graph, input, stream_mode, model, params, metadata)
        response = self._http.post("/v1/jobs", json=body)
        _raise_for_error(response)
        return response.json()

    def get(self, job_id: str) -> dict[str, Any]:
        response = self._http.get(f"/v1/jobs/{job_id}")
        _raise_for_error(response)
        return response.json()

    def cancel(self, job_id: str) -> dict[str, Any]:
        response = self._http.post(f"/v1/jobs/{job_id}/cancel")
        _raise_for_error(response)
        return response.json()

    def list_jobs(self, limit: int = 20) -> list[dict[str, Any]]:
        """Recent jobs, newest first."""
        response = self._http.get("/v1/jobs", params={"limit": limit})
        _raise_for_error(response)
        return response.json()["data"]

    def stream(self, job_id: str, last_event_id: str | None = None, *,
               filters: dict[str, Any] | None = None) -> Iterator[Event]:
        """Events until `end`; `filters` (tags, node, events, final_only) choose this reader's view."""
        query = _filter_query(filters)
        resume = _Resume(last_event_id, self.max_reconnects)
        while not resume.done:
            error: Exception | None = None
            try:
                with self._http.stream("GET", f"/v1/jobs/{job_id}/stream", headers=resume.headers(), params=query,
                                       timeout=httpx.Timeout(10.0, read=STREAM_READ_TIMEOUT_S)) as response:
                    if response.status_code >= 400:
                        response.read()
                        _raise_for_error(response)
                    parser = SSEParser()
                    for text in response.iter_text():
                        for event in parser.feed(text):
                            resume.seen(event)
                            yield event
                            if resume.done:
                                return
            except httpx.TransportError as exc:
                error = exc
            time.sleep(resume.next_delay(error))


class AsyncClient:
    def __init__(self, base_url: str = DEFAULT_BASE_URL, *, api_key: str | None = None, timeout_s: float = 30.0,
                 max_reconnects: int = 10, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._http = httpx.AsyncClient(base_url=base_url, headers=_headers(api_key), timeout=timeout_s,
                                       transport=transport)
        self.max_reconnects = max_reconnects

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def submit(self, prompt: str | None = None, *, messages: list[dict] | None = None, model: str = "demo",
                     params: dict | None = None, metadata: dict | None = None) -> dict[str, Any]:
        response = await self._http.post("/v1/jobs", json=_job_body(prompt, messages, model, params, metadata))
        _raise_for_error(response)
        return response.json()

    async def submit_graph(self, graph: str, input: dict | None = None, *, stream_mode: list[str] | None = None,
                     model: str | None = None, params: dict | None = None,
                     metadata: dict | None = None) -> dict[str, Any]:
        """Run a registered graph; `stream_mode` takes LangGraph's modes (default ["messages"])."""
        body = _graph_body(graph, input, stream_mode, model, params, metadata)
        response = await self._http.post("/v1/jobs", json=body)
        _raise_for_error(response)
        return response.json()

    async def get(self, job_id: str) -> dict[str, Any]:
        response = await self._http.get(f"/v1/jobs/{job_id}")
        _raise_for_error(response)
        return response.json()

    async def cancel(self, job_id: str) -> dict[str, Any]:
        response = await self._http.post(f"/v1/jobs/{job_id}/cancel")
        _raise_for_error(response)
        return response.json()

    async def list_jobs(self, limit: int = 20) -> list[dict[str, Any]]:
        """Recent jobs, newest first."""
        response = await self._http.get("/v1/jobs", params={"limit": limit})
        _raise_for_error(response)
        return response.json()["data"]

    async def stream(self, job_id: str, last_event_id: str | None = None, *,
                     filters: dict[str, Any] | None = None) -> AsyncIterator[Event]:
        query = _filter_query(filters)
        resume = _Resume(last_event_id, self.max_reconnects)
        while not resume.done:
            error: Exception | None = None
            try:
                async with self._http.stream("GET", f"/v1/jobs/{job_id}/stream", headers=resume.headers(), params=query,
                                             timeout=httpx.Timeout(10.0, read=STREAM_READ_TIMEOUT_S)) as response:
                    if response.status_code >= 400:
                        await response.aread()
                        _raise_for_error(response)
                    parser = SSEParser()
                    async for text in response.aiter_text():
                        for event in parser.feed(text):
                            resume.seen(event)
                            yield event
                            if resume.done:
                                return
            except httpx.TransportError as exc:
                error = exc
            await asyncio.sleep(resume.next_delay(error))
