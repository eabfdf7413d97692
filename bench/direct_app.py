"""The `direct` baseline: the FastAPI streaming-tutorial pattern. The request handler runs the demo model
and relays it through an asyncio.Queue to a StreamingResponse, one SSE event per token; no queue, no
durability."""

from __future__ import annotations

import asyncio
import json
import time

from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from langchain_core.messages import HumanMessage

from tokenrelay.engine.demo import DemoChatModel

DONE = object()


def create_app() -> FastAPI:
    app = FastAPI()

    @app.get("/stream")
    async def stream(max_tokens: int = 64, tps: float = 0.0) -> StreamingResponse:
        queue: asyncio.Queue = asyncio.Queue()
        model = DemoChatModel(max_tokens=max_tokens, tokens_per_second=tps)

        async def produce() -> None:
            index = 0
            async for chunk in model.astream([HumanMessage(content="bench")]):
                if chunk.content:
                    await queue.put({"text": chunk.content, "index": index, "ts": time.time()})
                    index += 1
            await queue.put(DONE)

        async def events():
            task = asyncio.create_task(produce())
            try:
                while (item := await queue.get()) is not DONE:
                    yield f"event: token\ndata: {json.dumps(item)}\n\n"
                yield 'event: end\ndata: {"status": "succeeded"}\n\n'
            finally:
                task.cancel()

        return StreamingResponse(events(), media_type="text/event-stream")

    return app
