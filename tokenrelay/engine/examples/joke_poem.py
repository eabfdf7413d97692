"""`joke_poem`: one node makes two tagged model calls at once, a joke (`joke`) and a poem (`poem`).

Their tokens interleave on the stream; a reader can follow one of them with `?tags=poem`.
"""

from __future__ import annotations

import asyncio
from typing import TypedDict

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage
from langgraph.graph import START, StateGraph


class State(TypedDict, total=False):
    topic: str
    joke: str
    poem: str


def build(model: BaseChatModel):
    async def call_model(state: State) -> State:
        topic = state.get("topic") or "streams"
        joke, poem = await asyncio.gather(
            model.ainvoke([HumanMessage(f"Tell a short joke about {topic}.")], config={"tags": ["joke"]}),
            model.ainvoke([HumanMessage(f"Write a four-line poem about {topic}.")], config={"tags": ["poem"]}),
        )
        return {"joke": joke.text, "poem": poem.text}

    return StateGraph(State).add_node("call_model", call_model).add_edge(START, "call_model").compile()
