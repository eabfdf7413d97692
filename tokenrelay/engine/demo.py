"""`demo`: an offline, deterministic LangChain chat model that streams readable text at a set pace.

It goes through LangChain's own streaming machinery, so it takes the same path as any provider. With
tools bound it acts as a tool-calling model: arithmetic in the prompt, a tool named in it, or a forcing
`tool_choice` becomes a tool call, and after the tool's answer it states the result, so agents run offline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    message_chunk_to_message,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.utils.function_calling import convert_to_openai_tool

from .demo_tools import tool_call_chunk

PASSAGE = (
    "Tokens travel from a worker through a Redis stream to every reader that asks for them. "
    "A reader may join late, drop, and resume from the last event it saw, and nothing is lost "
    "or repeated on the way. Each job runs once on the worker fleet while any number of clients "
    "watch it arrive, one token at a time, in the order it was written."
)


def demo_tokens(prompt: str, count: int) -> list[str]:
    """Exactly `count` tokens: an echo of the prompt's words, then the passage, repeated as needed."""
    prompt_words = prompt.split()
    words = ["You", "asked:"] + prompt_words + ["Here", "is", "the", "answer."] if prompt_words else []
    passage = PASSAGE.split()
    tokens: list[str] = []
    while len(tokens) < count:
        source = words if not tokens and words else passage
        for word in source:
            if len(tokens) == count:
                break
            tokens.append(word if not tokens else " " + word)
        words = []
    return tokens


def _prompt_text(messages: list[BaseMessage]) -> str:
    for message in reversed(messages):
        if message.type == "human":
            return message.text if hasattr(message, "text") and isinstance(message.text, str) else str(message.content)
    return ""


def _words(text: str) -> list[str]:
    return [word if i == 0 else " " + word for i, word in enumerate(text.split())]


def _tool_call(messages: list[BaseMessage], tools: list[dict] | None, tool_choice: Any = None) -> dict | None:
    if not tools or not messages or messages[-1].type != "human":
        return None
    return tool_call_chunk(_prompt_text(messages), tools, tool_choice)


def _truncate_at_stop(tokens: list[str], stop: list[str] | None) -> tuple[list[str], str]:
    """Cut the text where the first stop sequence starts, even one that spans tokens."""
    text = "".join(tokens)
    hits = [text.find(s) for s in stop or () if s and s in text]
    if not hits:
        return tokens, "length"
    cut, kept, length = min(hits), [], 0
    for token in tokens:
        if length + len(token) > cut:
            if cut > length:
                kept.append(token[: cut - length])
            break
        kept.append(token)
        length += len(token)
    return kept, "stop"


class DemoChatModel(BaseChatModel):
    """Streams `max_tokens` tokens derived from the prompt at `tokens_per_second` (0 = no pacing), after
    `start_delay_s` (the benchmark's readers join a job before its first token, as a broadcast's do)."""

    max_tokens: int = 64
    tokens_per_second: float = 30.0
    start_delay_s: float = 0.0
    stop: list[str] | None = None
    model_name: str = "demo"

    @property
    def _llm_type(self) -> str:
        return "tokenrelay-demo"

    def bind_tools(self, tools: list, *, tool_choice: Any = None, **kwargs: Any):
        kwargs.pop("parallel_tool_calls", None)  # it makes at most one call anyway
        return self.bind(tools=[convert_to_openai_tool(tool) for tool in tools], tool_choice=tool_choice, **kwargs)

    def _plan(self, messages: list[BaseMessage], stop: list[str] | None) -> tuple[list[str], str, int]:
        prompt = _prompt_text(messages)
        if messages and messages[-1].type == "tool":  # the tool answered: state its result
            tokens = _words(f"The result is {messages[-1].text}.")[: self.max_tokens]
            return tokens, "stop", max(1, len(prompt.split()))
        tokens, finish_reason = _truncate_at_stop(demo_tokens(prompt, self.max_tokens), stop or self.stop)
        return tokens, finish_reason, max(1, len(prompt.split()))

    def _delay_s(self, index: int, started: float, now: float) -> float:
        if self.tokens_per_second <= 0:
            return 0.0
        return max(0.0, started + (index + 1) / self.tokens_per_second - now)

    def _chunks(self, messages: list[BaseMessage], stop: list[str] | None,
                tools: list[dict] | None = None, tool_choice: Any = None) -> Iterator[ChatGenerationChunk]:
        call = _tool_call(messages, tools, tool_choice)
        if call is not None:
            input_tokens = max(1, len(_prompt_text(messages).split()))
            yield ChatGenerationChunk(message=AIMessageChunk(
                content="", tool_call_chunks=[call],
                usage_metadata={"input_tokens": input_tokens, "output_tokens": 1, "total_tokens": input_tokens + 1},
                response_metadata={"finish_reason": "tool_calls", "model_name": self.model_name},
            ))
            return
        tokens, finish_reason, input_tokens = self._plan(messages, stop)
        for position, token in enumerate(tokens):
            last = position == len(tokens) - 1
            message = AIMessageChunk(content=token)
            if last:
                message = AIMessageChunk(
                    content=token,
                    usage_metadata={
                        "input_tokens": input_tokens,
                        "output_tokens": len(tokens),
                        "total_tokens": input_tokens + len(tokens),
                    },
                    response_metadata={"finish_reason": finish_reason, "model_name": self.model_name},
                )
            yield ChatGenerationChunk(message=message)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        if self.start_delay_s > 0:
            time.sleep(self.start_delay_s)
        started = time.monotonic()
        for index, chunk in enumerate(self._chunks(messages, stop, kwargs.get("tools"), kwargs.get("tool_choice"))):
            delay = self._delay_s(index, started, time.monotonic())
            if delay:
                time.sleep(delay)
            if run_manager:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        loop = asyncio.get_running_loop()
        if self.start_delay_s > 0:
            await asyncio.sleep(self.start_delay_s)
        started = loop.time()
        for index, chunk in enumerate(self._chunks(messages, stop, kwargs.get("tools"), kwargs.get("tool_choice"))):
            # Always yield to the loop, so a fast demo job cannot starve the others.
            await asyncio.sleep(self._delay_s(index, started, loop.time()))
            if run_manager:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        merged: ChatGenerationChunk | None = None
        for chunk in self._stream(messages, stop, run_manager, **kwargs):
            merged = chunk if merged is None else merged + chunk
        message = AIMessage(content="") if merged is None else message_chunk_to_message(merged.message)
        return ChatResult(generations=[ChatGeneration(message=message)])
