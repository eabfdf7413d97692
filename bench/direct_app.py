"""The `direct` baseline: the FastAPI streaming-tutorial pattern. The request handler runs the demo model
and relays it through an asyncio.Queue to a StreamingResponse, one SSE event per token; no queue, no
durability.

For fan-out, an in-process broadcast: readers of `GET /stream/{job_id}` each register a queue, and
`POST /jobs/{job_id}` runs the model once and puts every token (encoded once) on every queue."""

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

    listeners: dict[str, list[asyncio.Queue]] = {}

    @app.get("/stream/{job_id}")
    async def follow(job_id: str) -> StreamingResponse:
        queue: asyncio.Queue = asyncio.Queue()
        listeners.setdefault(job_id, []).append(queue)

        async def events():
            yield ": joined\n\n"  # the load generator counts a reader as connected at its first bytes
            while (frame := await queue.get()) is not DONE:
                yield frame

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.post("/jobs/{job_id}")
    async def broadcast(job_id: str, max_tokens: int = 64, tps: float = 0.0) -> dict:
        queues = listeners.pop(job_id, [])
        model = DemoChatModel(max_tokens=max_tokens, tokens_per_second=tps)

        async def produce() -> None:
            index = 0
            async for chunk in model.astream([HumanMessage(content="bench")]):
                if chunk.content:
                    frame = "event: token\ndata: " + json.dumps({"text": chunk.content, "index": index,
                                                                 "ts": time.time()}) + "\n\n"
                    for queue in queues:
                        queue.put_nowait(frame)
                    index += 1
            for queue in queues:
                queue.put_nowait('event: end\ndata: {"status": "succeeded"}\n\n')
                queue.put_nowait(DONE)

        app.state.broadcast = asyncio.create_task(produce())  # a reference until it ran
        return {"readers": len(queues)}

    return app
