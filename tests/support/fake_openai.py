"""A local server speaking OpenAI's Chat Completions wire format, so tests exercise the real client library.

Behaviour by model name:
- anything: streams "Echo: <last user message>" word by word, `chunk_delay_s` apart;
- `error-400` / `error-401`: answers that status with OpenAI's error body;
- `drop-after-<N>`: sends N content chunks (or tool-call argument pieces), then cuts the connection;
- `flaky-<N>`: like `drop-after-<N>` on the first request for a prompt, complete on the next ones;
- `unavailable-once`: `503` on the first request for a prompt, a normal stream on the next ones;
- with `tools` in the request and "square root of N" in the last user message: streams a call to
  the first tool (OpenAI's `tool_calls` deltas, arguments in pieces); after a `tool` message it
  answers "The result is <tool output>.";
- with `response_format` `json_schema`: answers a JSON object of the schema's properties, each string
  one holding the last user message (the way a provider honours the format), in pieces.
Streams end with a usage chunk when `stream_options.include_usage` asks for one.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from tokenrelay.cli.embedded import free_port

SECRET_IN_ERRORS = "sk-provider-secret-do-not-leak"


def reply_tokens(messages: list[dict[str, Any]]) -> list[str]:
    user = [m for m in messages if m.get("role") == "user"]
    text = user[-1]["content"] if user else ""
    words = ["Echo:"] + str(text).split()
    return [word if i == 0 else " " + word for i, word in enumerate(words)]


SQUARE_ROOT = re.compile(r"square root of (\d+(?:\.\d+)?)")


def _tool_call(body: dict[str, Any]) -> tuple[str, str] | None:
    """(tool name, arguments JSON) when the request has tools and the user asks for a square root."""
    messages = body.get("messages") or []
    if not body.get("tools") or not messages or messages[-1].get("role") != "user":
        return None
    match = SQUARE_ROOT.search(str(messages[-1].get("content", "")))
    if not match:
        return None
    function = body["tools"][0]["function"]
    argument = next(iter(function.get("parameters", {}).get("properties", {})), "expression")
    return function["name"], json.dumps({argument: f"sqrt({match.group(1)})"})


def _json_answer(body: dict[str, Any]) -> list[str] | None:
    response_format = body.get("response_format") or {}
    if response_format.get("type") != "json_schema":
        return None
    user = [m for m in body.get("messages", []) if m.get("role") == "user"]
    text = str(user[-1]["content"]) if user else ""
    properties = (response_format["json_schema"].get("schema") or {}).get("properties") or {}
    answer = json.dumps({name: text if spec.get("type") == "string" else None for name, spec in properties.items()})
    return [answer[start:start + 8] for start in range(0, len(answer), 8)]


def _after_tool(messages: list[dict[str, Any]]) -> list[str] | None:
    if messages and messages[-1].get("role") == "tool":
        words = f"The result is {messages[-1].get('content', '')}.".split()
        return [word if i == 0 else " " + word for i, word in enumerate(words)]
    return None


def _chunk(model: str, delta: dict, finish_reason: str | None = None, usage: dict | None = None) -> str:
    body = {
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
    if usage:
        body["usage"] = usage
    return f"data: {json.dumps(body)}\n\n"


class FakeOpenAIServer:
    def __init__(self, chunk_delay_s: float = 0.01) -> None:
        self.chunk_delay_s = chunk_delay_s
        self.port = free_port()
        self.requests: list[dict[str, Any]] = []
        self._seen: dict[tuple[str, str], int] = {}  # (model, last message) -> requests so far
        self.app = Starlette(routes=[Route("/v1/chat/completions", self._completions, methods=["POST"])])
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def _completions(self, request: Request):
        body = await request.json()
        self.requests.append(body)
        model = body.get("model", "")
        if model.startswith("error-"):
            status = int(model.split("-")[1])
            return JSONResponse(
                {"error": {"message": f"bad key {SECRET_IN_ERRORS}", "type": "invalid_request_error",
                           "param": None, "code": None}},
                status_code=status,
            )
        messages = body.get("messages", [])
        seen_key = (model, json.dumps(messages[-1:]))
        first_time = self._seen.get(seen_key, 0) == 0
        self._seen[seen_key] = self._seen.get(seen_key, 0) + 1
        if model == "unavailable-once" and first_time:
            return JSONResponse({"error": {"message": "overloaded", "type": "server_error", "param": None,
                                           "code": None}}, status_code=503)
        tokens = _json_answer(body) or _after_tool(messages) or reply_tokens(messages)
        drop_after = int(model.split("-")[-1]) if model.startswith("drop-after-") else None
        if model.startswith("flaky-") and first_time:
            drop_after = int(model.split("-")[-1])
        tool_call = _tool_call(body)
        if not body.get("stream"):
            return JSONResponse({
                "id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()), "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(tokens)},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": len(tokens), "total_tokens": 3 + len(tokens)},
            })
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        usage = {"prompt_tokens": 3, "completion_tokens": len(tokens), "total_tokens": 3 + len(tokens)}

        async def tool_call_events():
            name, arguments = tool_call
            yield _chunk(model, {"role": "assistant", "content": None, "tool_calls": [
                {"index": 0, "id": "call_fake_1", "type": "function", "function": {"name": name, "arguments": ""}}]})
            third = len(arguments) // 3 + 1
            for piece, start in enumerate(range(0, len(arguments), third)):
                if drop_after is not None and piece == drop_after:
                    raise ConnectionResetError("test server drops the connection")
                await asyncio.sleep(self.chunk_delay_s)
                yield _chunk(model, {"tool_calls": [{"index": 0, "function": {"arguments": arguments[start:start + third]}}]})
            yield _chunk(model, {}, finish_reason="tool_calls")
            if include_usage:
                yield _chunk(model, {}, usage={"prompt_tokens": 3, "completion_tokens": 9, "total_tokens": 12})
            yield "data: [DONE]\n\n"

        if tool_call:
            return StreamingResponse(tool_call_events(), media_type="text/event-stream")

        async def events():
            yield _chunk(model, {"role": "assistant", "content": ""})
            for index, token in enumerate(tokens):
                if drop_after is not None and index == drop_after:
                    raise ConnectionResetError("test server drops the connection")
                await asyncio.sleep(self.chunk_delay_s)
                yield _chunk(model, {"content": token})
            yield _chunk(model, {}, finish_reason="stop")
            if include_usage:
                yield _chunk(model, {}, usage=usage)
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    def start(self) -> "FakeOpenAIServer":
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("fake OpenAI server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server:
            self._server.should_exit = True
        if self._thread:
            self._thread.join(5)

    def __enter__(self) -> "FakeOpenAIServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
