"""The LangGraph side of the benchmark: a one-node graph whose chat model streams `max_tokens` tokens at once.

Served by LangGraph's dev server (`langgraph dev`, in-memory runtime) from its own virtualenv, and read
with its SDK (`stream_mode="messages-tuple"`), as a LangGraph user would. The model is a fake, like
tokenrelay's `demo`: the same number of tokens, no pacing, no provider.
"""

from __future__ import annotations

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langgraph.graph import END, START, MessagesState, StateGraph


class FakeTokens(BaseChatModel):
    tokens: int = 64

    @property
    def _llm_type(self) -> str:
        return "bench-fake-tokens"

    def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        text = "".join(f"t{i} " for i in range(self.tokens))
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])

    async def _astream(self, messages, stop=None, run_manager=None, **kwargs):
        for index in range(self.tokens):
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=f"t{index} "))
            if run_manager is not None:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk


class State(MessagesState):
    max_tokens: int


async def call_model(state: State, config) -> dict:
    model = FakeTokens(tokens=state.get("max_tokens") or 64)
    return {"messages": [await model.ainvoke(state["messages"], config)]}


graph = StateGraph(State).add_node("call_model", call_model).add_edge(START, "call_model") \
    .add_edge("call_model", END).compile()
