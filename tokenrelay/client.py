"""Python clients of a tokenrelay gateway: `Client` (sync) and `AsyncClient`.

`stream()` yields typed events and reconnects by itself after a dropped connection, resuming
with Last-Event-ID, until the job's `end` event. `submit()` sends an Idempotency-Key (its own, or
one it makes) and retries with the same key when the answer was lost or the gateway said to come
back (409, 503), so a retried submit never runs a job twice.

Both clients share `_BaseClient` (httpx's pattern): it builds every request, maps error answers,
parses the event stream and keeps the resume bookkeeping. `Client` and `AsyncClient` only send
requests and iterate over response bodies.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from .errors import ClientError
from .events import Event
from .sse import SSEParser

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
RECONNECT_DELAYS_S = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0)
STREAM_READ_TIMEOUT_S = 60.0  # above the gateway's 15 s keepalive
STREAM_CONNECT_TIMEOUT_S = 10.0
SUBMIT_RETRIES = 3
SUBMIT_RETRY_STATUSES = (409, 503)
SUBMIT_RETRY_DELAYS_S = (0.5, 1.0, 2.0)
MAX_SUBMIT_WAIT_S = 10.0
# The request may have reached the gateway: only the key makes a retry safe. (A refused connection
# sent nothing; it is not retried, so an unreachable gateway is reported at once.)
AMBIGUOUS_ERRORS = (httpx.ReadError, httpx.WriteError, httpx.ReadTimeout, httpx.WriteTimeout,
                    httpx.RemoteProtocolError)


def new_idempotency_key() -> str:
    return uuid.uuid4().hex


def _submit_wait(attempt: int, response: httpx.Response | None) -> float | None:
    """Seconds before retry `attempt` (from 0) of a submit, or None: do not retry."""
    if attempt >= SUBMIT_RETRIES:
        return None
    if response is None:
        return SUBMIT_RETRY_DELAYS_S[min(attempt, len(SUBMIT_RETRY_DELAYS_S) - 1)]
    if response.status_code not in SUBMIT_RETRY_STATUSES:
        return None
    try:
        return min(MAX_SUBMIT_WAIT_S, float(response.headers.get("Retry-After", "1")))
    except ValueError:
        return 1.0


TOOL_FIELDS = ("tools", "tool_choice", "parallel_tool_calls", "response_format")


@dataclass(frozen=True)
class _Call:
    """One request of the API, and which part of its JSON answer the caller gets."""

    method: str
    path: str
    json: dict[str, Any] | None = None
    params: dict[str, Any] | None = None
    pick: str | None = None  # a key of the answer to return instead of the whole answer
    headers: dict[str, str] | None = None


def _raise_for_error(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        error = response.json()["error"]
        raise ClientError(response.status_code, error.get("type", "error"), error.get("message", ""),
                          error.get("param"))
    except (ValueError, KeyError, TypeError):
        raise ClientError(response.status_code, "http_error", response.text[:200]) from None


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


class _StreamSession:
    """One `stream()` call: the request to (re)send, the parser of the current response, where the stream
    stands, and whether to try again after a drop."""

    def __init__(self, job_id: str, last_event_id: str | None, filters: dict[str, Any] | None,
                 max_reconnects: int) -> None:
        self.path = f"/v1/jobs/{job_id}/stream"
        self.query = _filter_query(filters)
        self.last_event_id = last_event_id
        self.max_reconnects = max_reconnects
        self.failures = 0
        self.done = False
        self._parser = SSEParser()

    def request(self) -> dict[str, Any]:
        """Keyword arguments of the (re)connecting request."""
        headers = {"Last-Event-ID": self.last_event_id} if self.last_event_id else {}
        return {"headers": headers, "params": self.query,
                "timeout": httpx.Timeout(STREAM_CONNECT_TIMEOUT_S, read=STREAM_READ_TIMEOUT_S)}

    def open(self, response: httpx.Response) -> None:
        """Start reading `response` (its body already read if it is an error answer, which raises)."""
        _raise_for_error(response)
        self._parser = SSEParser()

    def feed(self, text: str) -> Iterator[Event]:
        """The complete events in `text`, each recorded as seen; stops after `end`."""
        for event in self._parser.feed(text):
            if event.id is not None:
                self.last_event_id = event.id
            self.failures = 0
            self.done = event.is_end
            yield event
            if self.done:
                return

    def next_delay(self, error: Exception | None) -> float:
        """Delay before reconnecting; raises once reconnects are used up."""
        self.failures += 1
        if self.failures > self.max_reconnects:
            raise ClientError(0, "stream_lost", f"stream dropped {self.failures} times in a row") from error
        return RECONNECT_DELAYS_S[min(self.failures - 1, len(RECONNECT_DELAYS_S) - 1)]


def _idempotency(key: str | None) -> dict[str, str]:
    return {"Idempotency-Key": key or new_idempotency_key()}


class _BaseClient:
    """Everything both clients share: how each call is made and what it returns; no I/O."""

    def __init__(self, *, max_reconnects: int) -> None:
        self.max_reconnects = max_reconnects

    @staticmethod
    def _http_options(base_url: str, api_key: str | None, timeout_s: float, transport: Any) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        return {"base_url": base_url, "headers": headers, "timeout": timeout_s, "transport": transport}

    @staticmethod
    def _submit_call(prompt: str | None, messages: list[dict] | None, model: str, params: dict | None,
                     metadata: dict | None, idempotency_key: str | None,
                     tool_fields: dict[str, Any] | None = None) -> _Call:
        unknown = set(tool_fields or ()) - set(TOOL_FIELDS)
        if unknown:
            raise TypeError(f"submit() got unexpected arguments: {', '.join(sorted(unknown))}")
        body: dict[str, Any] = {"model": model, **{k: v for k, v in (tool_fields or {}).items() if v is not None}}
        if messages is not None:
            body["messages"] = messages
        else:
            body["prompt"] = prompt
        if params:
            body["params"] = params
        if metadata:
            body["metadata"] = metadata
        return _Call("POST", "/v1/jobs", json=body, headers=_idempotency(idempotency_key))

    @staticmethod
    def _submit_graph_call(graph: str, graph_input: dict | None, stream_mode: list[str] | None, model: str | None,
                           params: dict | None, metadata: dict | None, idempotency_key: str | None) -> _Call:
        body: dict[str, Any] = {"graph": graph, "input": graph_input or {}}
        for name, value in (("stream_mode", stream_mode), ("model", model), ("params", params),
                            ("metadata", metadata)):
            if value:
                body[name] = value
        return _Call("POST", "/v1/jobs", json=body, headers=_idempotency(idempotency_key))

    @staticmethod
    def _get_call(job_id: str) -> _Call:
        return _Call("GET", f"/v1/jobs/{job_id}")

    @staticmethod
    def _cancel_call(job_id: str) -> _Call:
        return _Call("POST", f"/v1/jobs/{job_id}/cancel")

    @staticmethod
    def _list_jobs_call(limit: int) -> _Call:
        return _Call("GET", "/v1/jobs", params={"limit": limit}, pick="data")

    @staticmethod
    def _result(call: _Call, response: httpx.Response) -> Any:
        _raise_for_error(response)
        body = response.json()
        return body[call.pick] if call.pick else body

    def _stream_session(self, job_id: str, last_event_id: str | None,
                        filters: dict[str, Any] | None) -> _StreamSession:
        return _StreamSession(job_id, last_event_id, filters, self.max_reconnects)


class Client(_BaseClient):
    def __init__(self, base_url: str = DEFAULT_BASE_URL, *, api_key: str | None = None, timeout_s: float = 30.0,
                 max_reconnects: int = 10, transport: httpx.BaseTransport | None = None) -> None:
        super().__init__(max_reconnects=max_reconnects)
        self._http = httpx.Client(**self._http_options(base_url, api_key, timeout_s, transport))

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: _Call) -> Any:
        return self._result(call, self._http.request(call.method, call.path, json=call.json, params=call.params,
                                                     headers=call.headers))

    def _send_retrying(self, call: _Call) -> Any:
        """A submit: sent again (same Idempotency-Key) while the answer is lost or says to come back."""
        attempt = 0
        while True:
            try:
                response = self._http.request(call.method, call.path, json=call.json, headers=call.headers)
            except AMBIGUOUS_ERRORS:
                if _submit_wait(attempt, None) is None:
                    raise
                response = None
            wait = _submit_wait(attempt, response)
            if wait is None:
                return self._result(call, response)
            time.sleep(wait)
            attempt += 1

    def submit(self, prompt: str | None = None, *, messages: list[dict] | None = None, model: str = "demo",
               params: dict | None = None, metadata: dict | None = None,
               idempotency_key: str | None = None, **tool_fields: Any) -> dict[str, Any]:
        """Submit a model job; `tools`, `tool_choice`, `parallel_tool_calls` and `response_format` pass as given."""
        return self._send_retrying(self._submit_call(prompt, messages, model, params, metadata, idempotency_key,
                                                     tool_fields))

    def submit_graph(self, graph: str, input: dict | None = None, *, stream_mode: list[str] | None = None,
                     model: str | None = None, params: dict | None = None,
                     metadata: dict | None = None, idempotency_key: str | None = None) -> dict[str, Any]:
        """Run a registered graph; `stream_mode` takes LangGraph's modes (default ["messages"])."""
        return self._send_retrying(self._submit_graph_call(graph, input, stream_mode, model, params, metadata,
                                                           idempotency_key))

    def get(self, job_id: str) -> dict[str, Any]:
        return self._send(self._get_call(job_id))

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._send(self._cancel_call(job_id))

    def list_jobs(self, limit: int = 20) -> list[dict[str, Any]]:
        """Recent jobs, newest first."""
        return self._send(self._list_jobs_call(limit))

    def stream(self, job_id: str, last_event_id: str | None = None, *,
               filters: dict[str, Any] | None = None) -> Iterator[Event]:
        """Events until `end`; `filters` (tags, node, events, final_only) choose this reader's view."""
        session = self._stream_session(job_id, last_event_id, filters)
        while not session.done:
            error: Exception | None = None
            try:
                with self._http.stream("GET", session.path, **session.request()) as response:
                    if response.status_code >= 400:
                        response.read()
                    session.open(response)
                    for text in response.iter_text():
                        yield from session.feed(text)
                        if session.done:
                            return
            except httpx.TransportError as exc:
                error = exc
            time.sleep(session.next_delay(error))


class AsyncClient(_BaseClient):
    def __init__(self, base_url: str = DEFAULT_BASE_URL, *, api_key: str | None = None, timeout_s: float = 30.0,
                 max_reconnects: int = 10, transport: httpx.AsyncBaseTransport | None = None) -> None:
        super().__init__(max_reconnects=max_reconnects)
        self._http = httpx.AsyncClient(**self._http_options(base_url, api_key, timeout_s, transport))

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, call: _Call) -> Any:
        response = await self._http.request(call.method, call.path, json=call.json, params=call.params,
                                            headers=call.headers)
        return self._result(call, response)

    async def _send_retrying(self, call: _Call) -> Any:
        """A submit: sent again (same Idempotency-Key) while the answer is lost or says to come back."""
        attempt = 0
        while True:
            try:
                response = await self._http.request(call.method, call.path, json=call.json, headers=call.headers)
            except AMBIGUOUS_ERRORS:
                if _submit_wait(attempt, None) is None:
                    raise
                response = None
            wait = _submit_wait(attempt, response)
            if wait is None:
                return self._result(call, response)
            await asyncio.sleep(wait)
            attempt += 1

    async def submit(self, prompt: str | None = None, *, messages: list[dict] | None = None, model: str = "demo",
                     params: dict | None = None, metadata: dict | None = None,
                     idempotency_key: str | None = None, **tool_fields: Any) -> dict[str, Any]:
        return await self._send_retrying(self._submit_call(prompt, messages, model, params, metadata,
                                                           idempotency_key, tool_fields))

    async def submit_graph(self, graph: str, input: dict | None = None, *, stream_mode: list[str] | None = None,
                           model: str | None = None, params: dict | None = None,
                           metadata: dict | None = None, idempotency_key: str | None = None) -> dict[str, Any]:
        """Run a registered graph; `stream_mode` takes LangGraph's modes (default ["messages"])."""
        return await self._send_retrying(self._submit_graph_call(graph, input, stream_mode, model, params, metadata,
                                                                 idempotency_key))

    async def get(self, job_id: str) -> dict[str, Any]:
        return await self._send(self._get_call(job_id))

    async def cancel(self, job_id: str) -> dict[str, Any]:
        return await self._send(self._cancel_call(job_id))

    async def list_jobs(self, limit: int = 20) -> list[dict[str, Any]]:
        """Recent jobs, newest first."""
        return await self._send(self._list_jobs_call(limit))

    async def stream(self, job_id: str, last_event_id: str | None = None, *,
                     filters: dict[str, Any] | None = None) -> AsyncIterator[Event]:
        """Events until `end`; `filters` (tags, node, events, final_only) choose this reader's view."""
        session = self._stream_session(job_id, last_event_id, filters)
        while not session.done:
            error: Exception | None = None
            try:
                async with self._http.stream("GET", session.path, **session.request()) as response:
                    if response.status_code >= 400:
                        await response.aread()
                    session.open(response)
                    async for text in response.aiter_text():
                        for event in session.feed(text):
                            yield event
                        if session.done:
                            return
            except httpx.TransportError as exc:
                error = exc
            await asyncio.sleep(session.next_delay(error))
