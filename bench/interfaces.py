"""Scenario 11: submit → first token through each interface, read by the client a user of it would use.

One request at a time to an otherwise idle stack, `demo` model unpaced, 5 tokens; from sending the request
to the first text reaching the client. The `openai` SDK drives the OpenAI-compatible routes (chat
completions, and Responses streamed at once or created in the background and then retrieved as a
stream); httpx reads `POST /v1/jobs` and the AI SDK's UI message stream. (The AI SDK's own Node client and
the web page in a browser need Node and Chromium, which the benchmark does not assume.)
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable

import httpx
from openai import AsyncOpenAI

from .scenarios import HOST, percentile

TOKENS = 5
WARMUP_RUNS = 2
UNPACED = {"tokens_per_second": 0}


async def _jobs_http(http: httpx.AsyncClient, openai: AsyncOpenAI) -> None:
    body = {"model": "demo", "prompt": "bench", "stream": True, "params": {"max_tokens": TOKENS, **UNPACED}}
    async with http.stream("POST", "/v1/jobs", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if line == "event: token":
                return
    raise RuntimeError("the stream ended without a token")


async def _chat_completions(http: httpx.AsyncClient, openai: AsyncOpenAI) -> None:
    stream = await openai.chat.completions.create(model="demo", messages=[{"role": "user", "content": "bench"}],
                                                  stream=True, max_tokens=TOKENS, extra_body=UNPACED)
    try:
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                return
    finally:
        await stream.close()
    raise RuntimeError("the stream ended without text")


async def _first_text_delta(stream) -> None:
    try:
        async for event in stream:
            if event.type == "response.output_text.delta":
                return
    finally:
        await stream.close()
    raise RuntimeError("the stream ended without text")


async def _responses(http: httpx.AsyncClient, openai: AsyncOpenAI) -> None:
    await _first_text_delta(await openai.responses.create(model="demo", input="bench", stream=True,
                                                          max_output_tokens=TOKENS, extra_body=UNPACED))


async def _responses_background(http: httpx.AsyncClient, openai: AsyncOpenAI) -> None:
    created = await openai.responses.create(model="demo", input="bench", background=True,
                                            max_output_tokens=TOKENS, extra_body=UNPACED)
    await _first_text_delta(await openai.responses.retrieve(created.id, stream=True))


async def _ai_sdk_http(http: httpx.AsyncClient, openai: AsyncOpenAI) -> None:
    body = {"id": uuid.uuid4().hex, "max_tokens": TOKENS, **UNPACED,
            "messages": [{"role": "user", "parts": [{"type": "text", "text": "bench"}]}]}
    async with http.stream("POST", "/ai-sdk/chat", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if line.startswith("data: {") and json.loads(line[6:]).get("type") == "text-delta":
                return
    raise RuntimeError("the stream ended without a text delta")


INTERFACES: dict[str, Callable[[httpx.AsyncClient, AsyncOpenAI], Awaitable[None]]] = {
    "jobs_stream_httpx": _jobs_http,
    "chat_completions_openai_sdk": _chat_completions,
    "responses_openai_sdk": _responses,
    "responses_background_then_retrieve_openai_sdk": _responses_background,
    "ai_sdk_chat_httpx": _ai_sdk_http,
}


async def first_token_by_interface(impl, sizes) -> dict:
    """p50 and max in ms per interface, over `sizes.interface_runs` requests after a warm-up."""
    base = f"http://{HOST}:{impl.port}"
    figures: dict[str, float] = {}
    async with httpx.AsyncClient(base_url=base, timeout=30) as http, \
            AsyncOpenAI(base_url=f"{base}/v1", api_key="bench", max_retries=0, timeout=30) as openai:
        for name, first_token in INTERFACES.items():
            times = []
            for run in range(WARMUP_RUNS + sizes.interface_runs):
                started = time.perf_counter()
                await first_token(http, openai)
                if run >= WARMUP_RUNS:
                    times.append(time.perf_counter() - started)
            figures[f"{name}_p50_ms"] = percentile(times, 0.5) * 1000
            figures[f"{name}_max_ms"] = max(times) * 1000
    return figures
