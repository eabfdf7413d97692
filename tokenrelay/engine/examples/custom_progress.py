"""`custom_progress`: a node streams progress and tokens from a plain Python generator, no LangChain model.

The pattern for code that calls a provider's SDK directly: each item goes out through
LangGraph's stream writer as a `custom` event.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import TypedDict

from langchain_core.language_models import BaseChatModel
from langgraph.config import get_stream_writer
from langgraph.graph import START, StateGraph

from tokenrelay.engine.demo import DemoChatModel, demo_tokens

MAX_STEPS = 20
_DONE = object()


class State(TypedDict, total=False):
    topic: str
    steps: int
    text: str


def provider_tokens(model: BaseChatModel, prompt: str) -> Iterator[str]:
    """A blocking generator, as a provider SDK gives: the demo's tokens, or OpenAI's SDK stream."""
    if isinstance(model, DemoChatModel):
        pace = 1 / model.tokens_per_second if model.tokens_per_second > 0 else 0
        for token in demo_tokens(prompt, model.max_tokens):
            time.sleep(pace)
            yield token
        return
    stream = model.root_client.chat.completions.create(  # ChatOpenAI's own OpenAI SDK client
        model=model.model_name, messages=[{"role": "user", "content": prompt}], stream=True,
        max_tokens=model.max_tokens,
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            yield chunk.choices[0].delta.content


def build(model: BaseChatModel):
    pace_s = 1 / model.tokens_per_second if isinstance(model, DemoChatModel) and model.tokens_per_second else 0

    async def generate(state: State) -> State:
        write = get_stream_writer()
        topic = state.get("topic") or "streams"
        steps = max(1, min(int(state.get("steps") or 3), MAX_STEPS))
        for step in range(1, steps + 1):
            write({"stage": "preparing", "step": step, "of": steps})
            await asyncio.sleep(pace_s * 5)  # stands in for real work: a cancel lands here too
        tokens = provider_tokens(model, f"Write about {topic}")
        parts: list[str] = []
        while True:
            # The generator blocks like an SDK: each item is fetched off the event loop.
            token = await asyncio.to_thread(next, tokens, _DONE)
            if token is _DONE:
                break
            parts.append(token)
            write({"token": token})
        write({"stage": "done", "step": steps, "of": steps})
        return {"text": "".join(parts)}

    return StateGraph(State).add_node("generate", generate).add_edge(START, "generate").compile()
