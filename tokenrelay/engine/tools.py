"""Tool calling on workers: a job's messages and tools made into a LangChain call, and the model's streamed
tool-call pieces made into whole calls.

Pure like the runner: it knows neither Celery, Redis nor HTTP. Tool arguments are model output: they are
parsed as JSON and relayed, never executed here.
"""

from __future__ import annotations

import json
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.runnables import Runnable


def to_langchain_messages(messages: list[dict[str, Any]]) -> list[BaseMessage]:
    """A job's messages (`{"role", "content"}`, assistant `tool_calls`, tool `tool_call_id`) as LangChain's."""
    out: list[BaseMessage] = []
    for message in messages:
        role, content = message["role"], message.get("content") or ""
        if role == "system":
            out.append(SystemMessage(content=content))
        elif role == "user":
            out.append(HumanMessage(content=content))
        elif role == "assistant":
            calls, invalid = [], []
            for call in message.get("tool_calls") or ():
                if isinstance(call["args"], dict):
                    calls.append({"id": call["id"], "name": call["name"], "args": call["args"], "type": "tool_call"})
                else:  # arguments that were not a JSON object when the model wrote them
                    invalid.append({"id": call["id"], "name": call["name"], "args": call["args"], "error": None,
                                    "type": "invalid_tool_call"})
            out.append(AIMessage(content=content, tool_calls=calls, invalid_tool_calls=invalid))
        elif role == "tool":
            out.append(ToolMessage(content=content, tool_call_id=message["tool_call_id"],
                                   name=message.get("name")))
        else:
            raise ValueError(f"unknown role {role!r}")
    return out


def langchain_tool_choice(choice: Any) -> Any:
    """OpenAI's `tool_choice` ("auto", "none", "required" or a named function) as `bind_tools` takes it."""
    if isinstance(choice, dict):
        return choice["function"]["name"]
    return choice


def bind_request(model: BaseChatModel, request: dict[str, Any]) -> Runnable:
    """The job's chat model with its tools and response format bound (the model itself when it has none)."""
    bound: Runnable = model
    tools = request.get("tools")
    if tools:
        extra = {}
        if request.get("parallel_tool_calls") is not None:
            extra["parallel_tool_calls"] = request["parallel_tool_calls"]
        bound = model.bind_tools(tools, tool_choice=langchain_tool_choice(request.get("tool_choice")), **extra)
    if request.get("response_format"):
        bound = bound.bind(response_format=request["response_format"])
    return bound


def parse_args(raw: str) -> Any:
    """A call's arguments: the JSON object the model wrote, or its raw text when that is not one."""
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return raw
    return value if isinstance(value, dict) else raw


class ToolCallCollector:
    """Joins streamed tool-call chunks into whole calls. A call is complete when a chunk of another call
    starts after it, or when the stream ends; calls are numbered in the order they started."""

    def __init__(self) -> None:
        self._open: dict[Any, dict[str, Any]] = {}
        self._last_key: Any = None
        self.completed: list[dict[str, Any]] = []

    def feed(self, chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Take one message chunk's `tool_call_chunks`; return the calls this completes."""
        done: list[dict[str, Any]] = []
        for piece in chunks:
            key = piece.get("index")
            if key is None:  # no index: a piece with an id starts a call, one without continues it
                key = len(self.completed) + len(self._open) if piece.get("id") or self._last_key is None \
                    else self._last_key
            if key not in self._open:
                done.extend(self._close_all())
                self._open[key] = {"id": None, "name": "", "args": ""}
            call = self._open[key]
            call["id"] = call["id"] or piece.get("id")
            call["name"] += piece.get("name") or ""
            call["args"] += piece.get("args") or ""
            self._last_key = key
        return done

    def finish(self) -> list[dict[str, Any]]:
        return self._close_all()

    def _close_all(self) -> list[dict[str, Any]]:
        done = []
        for call in self._open.values():
            whole = {"index": len(self.completed), "id": call["id"], "name": call["name"],
                     "args": parse_args(call["args"])}
            self.completed.append(whole)
            done.append(whole)
        self._open.clear()
        return done
