"""A local server speaking OpenAI's Chat Completions wire format, so tests exercise the real client library.

Behaviour by model name:
- anything: streams "Echo: <last user message>" word by word, `chunk_delay_s` apart;
- `error-400` / `error-401`: answers that status with OpenAI's error body;
- `drop-after-<N>`: sends N content chunks, then cuts the connection.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from tokenrelay.embedded import free_port

SECRET_IN_ERRORS = "sk-provider-secret-do-not-leak"


def reply_tokens(messages: list[dict[str, Any]]) -> list[str]:
    user = [m for m in messages if m.get("role") == "user"]
    text = user[-1]["content"] if user else ""
    words = ["Echo:"] + str(text).split()
    return [word if i == 0 else " " + word for i, word in enumerate(words)]


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
        tokens = reply_tokens(body.get("messages", []))
        drop_after = int(model.split("-")[-1]) if model.startswith("drop-after-") else None
        if not body.get("stream"):
            return JSONResponse({
                "id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()), "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(tokens)},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": len(tokens), "total_tokens": 3 + len(tokens)},
            })
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        async def events():
            yield _chunk(model, {"role": "assistant", "content": ""})
            for index, token in enumerate(tokens):
                if drop_after is not None and index == drop_after:
                    raise ConnectionResetError("test server drops the connection")
                await asyncio.sleep(self.chunk_delay_s)
                yield _chunk(model, {"content": token})
            yield _chunk(model, {}, finish_reason="stop")
            if include_usage:
                yield _chunk(model, {}, usage={"prompt_tokens": 3, "completion_tokens": len(tokens),
                                               "total_tokens": 3 + len(tokens)})
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
