"""The pure core: turn a chat model's streamed output into stream events.

Knows neither Celery, Redis nor HTTP; the worker feeds what it yields to a publisher.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import BaseMessage
from langchain_core.runnables import Runnable

from .. import events
from ..core.registry import TOOL_CALL
from ..errors import ModelNotConfigured
from ..events import Event
from .tools import ToolCallCollector


@dataclass
class Outcome:
    """What a finished run produced, for the job record and the `end` event."""

    text_parts: list[str] = field(default_factory=list)
    tokens: int = 0
    usage: dict[str, int] = field(default_factory=dict)
    finish_reason: str | None = None
    state: Any = None  # a graph's final state, as JSON
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # a model job's calls, as on the stream

    @property
    def text(self) -> str:
        return "".join(self.text_parts)

    @property
    def final_usage(self) -> dict[str, int]:
        """The provider's usage when it sent one; else the tokens counted here."""
        return self.usage or events.usage(output_tokens=self.tokens)

    def clear(self) -> None:
        """Forget a failed try's output before the next one."""
        self.text_parts, self.tokens, self.usage, self.finish_reason, self.state = [], 0, {}, None, None
        self.tool_calls = []


def _chunk_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content blocks
        return "".join(
            block if isinstance(block, str) else str(block.get("text", ""))
            for block in content
            if isinstance(block, str) or block.get("type") == "text"
        )
    return ""


def _valid_utf8(text: str) -> str:
    # A provider's JSON may hold a lone surrogate ("\ud83d"): it cannot be encoded, so replace it.
    try:
        text.encode()
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode()


async def stream_chat(model: Runnable, messages: list[BaseMessage], outcome: Outcome) -> AsyncIterator[Event]:
    """Yield one `token` event per non-empty chunk and one `tool_call` event per call the model finished
    writing, filling `outcome` as it goes."""
    calls = ToolCallCollector()
    async for chunk in model.astream(messages):
        for call in calls.feed(getattr(chunk, "tool_call_chunks", None) or []):
            outcome.tool_calls.append(call)
            yield Event(TOOL_CALL, call)
        text = _valid_utf8(_chunk_text(chunk.content))
        usage = getattr(chunk, "usage_metadata", None)
        if usage:
            outcome.usage = {
                "input_tokens": int(usage.get("input_tokens", 0)),
                "output_tokens": int(usage.get("output_tokens", 0)),
                "total_tokens": int(usage.get("total_tokens", 0)),
            }
        finish_reason = (chunk.response_metadata or {}).get("finish_reason")
        if finish_reason:
            outcome.finish_reason = finish_reason
        if text:
            yield Event(events.TOKEN, {"text": text, "index": outcome.tokens})
            outcome.tokens += 1
            outcome.text_parts.append(text)
    for call in calls.finish():
        outcome.tool_calls.append(call)
        yield Event(TOOL_CALL, call)
    if outcome.tool_calls:
        outcome.finish_reason = "tool_calls"
    elif outcome.finish_reason is None:
        outcome.finish_reason = "stop"
    outcome.usage = outcome.final_usage


PROVIDER_MODULES = ("openai", "langchain_openai", "httpx", "httpx2", "httpcore", "httpcore2", "h11")
UNREACHABLE_HINTS = ("Connection", "Connect", "Timeout", "Protocol")


def _causes(exc: BaseException, depth: int = 8):
    while exc is not None and depth:
        yield exc
        exc = exc.__cause__ or exc.__context__
        depth -= 1


def classify_error(exc: BaseException) -> str:
    """A client-safe error type for an exception (provider libraries wrap each other: look at the chain)."""
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ModelNotConfigured):
        return "configuration_error"
    for cause in _causes(exc):
        for cls in type(cause).__mro__:
            if cls.__module__.split(".")[0] in PROVIDER_MODULES:
                if any(hint in cls.__name__ for hint in UNREACHABLE_HINTS):
                    return "provider_unavailable"
                return "provider_error"
    return "internal_error"


def error_event(exc: BaseException) -> Event:
    """The client-safe `error` event for an exception: a type and a fixed message, never its text."""
    return events.error(classify_error(exc))
