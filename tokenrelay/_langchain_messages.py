"""What `RelayChatModel` sends and receives: LangChain messages and tools as a job's JSON, and a job's
events as message chunks (text, tool-call chunks, usage and metadata)."""

from __future__ import annotations

import json
from typing import Any

from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGenerationChunk
from langchain_core.utils.function_calling import convert_to_openai_tool

from .errors import ClientError
from .events import Event

ROLES = {"system": "system", "human": "user", "ai": "assistant", "AIMessageChunk": "assistant", "tool": "tool"}
TOOL_CHOICES = ("auto", "none", "required")


def _text(message: BaseMessage) -> str:
    return message.text if isinstance(message.text, str) else str(message.content)


def to_job_messages(messages: list[BaseMessage]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for message in messages:
        role = ROLES.get(message.type)
        if role is None:
            raise ValueError(f"RelayChatModel sends system, user, assistant and tool messages, not {message.type!r}")
        doc: dict[str, Any] = {"role": role, "content": _text(message)}
        if isinstance(message, AIMessage) and (message.tool_calls or message.invalid_tool_calls):
            doc["tool_calls"] = [{"id": call["id"], "name": call["name"], "args": call["args"]}
                                 for call in [*message.tool_calls, *message.invalid_tool_calls]]
        elif isinstance(message, ToolMessage):
            doc["tool_call_id"] = message.tool_call_id
            if message.name:
                doc["name"] = message.name
        elif not doc["content"]:
            continue  # an empty turn carries nothing
        out.append(doc)
    return out


def job_tool_choice(choice: Any) -> Any:
    """LangChain's `tool_choice` (`"any"`, `True`, a tool's name...) in OpenAI's terms, as jobs take it."""
    if choice is None or isinstance(choice, dict):
        return choice
    if choice is True or choice == "any":
        return "required"
    if choice is False:
        return "none"
    if choice in TOOL_CHOICES:
        return choice
    return {"type": "function", "function": {"name": str(choice)}}


def job_tools(tools: list[Any]) -> list[dict[str, Any]]:
    return [convert_to_openai_tool(tool) for tool in tools]


class Replay:
    """Turns a job's events into chunks. After a `reset` the new attempt's output is checked against
    what was already yielded: chunks cannot be taken back, so the repeat is swallowed, and a run
    that starts over with different output is an error rather than silently wrong output."""

    def __init__(self, job_id: str, model: str) -> None:
        self.job_id, self.model = job_id, model
        self.yielded, self.calls = "", []
        self.attempt_text: str | None = None  # text of the attempt after a reset
        self.attempt_calls: int | None = None  # tool calls of the attempt after a reset
        self.error: dict[str, Any] | None = None

    def feed(self, event: Event) -> ChatGenerationChunk | None:
        if event.event == "token":
            return self._token(event.data["text"])
        if event.event == "tool_call":
            return self._tool_call(event.data)
        if event.event == "reset":
            self.attempt_text, self.attempt_calls = "", 0
        elif event.event == "error":
            self.error = event.data
        elif event.event == "end":
            return self._end(event.data)
        return None

    def _diverged(self) -> ClientError:
        return ClientError(0, "reset_diverged", f"job {self.job_id} restarted and produced other output "
                           "than was already streamed")

    def _token(self, text: str) -> ChatGenerationChunk | None:
        if self.attempt_text is not None:
            self.attempt_text += text
            if self.yielded.startswith(self.attempt_text):
                return None
            if not self.attempt_text.startswith(self.yielded):
                raise self._diverged()
            text, self.attempt_text = self.attempt_text[len(self.yielded):], None
        self.yielded += text
        return ChatGenerationChunk(message=AIMessageChunk(content=text, id=self.job_id))

    def _tool_call(self, call: dict[str, Any]) -> ChatGenerationChunk | None:
        if self.attempt_calls is not None and self.attempt_calls < len(self.calls):
            if self.calls[self.attempt_calls] != call:
                raise self._diverged()
            self.attempt_calls += 1
            return None
        self.calls.append(call)
        args = call["args"] if isinstance(call["args"], str) else json.dumps(call["args"], ensure_ascii=False)
        piece = {"name": call["name"], "args": args, "id": call["id"], "index": call["index"],
                 "type": "tool_call_chunk"}
        return ChatGenerationChunk(message=AIMessageChunk(content="", id=self.job_id, tool_call_chunks=[piece]))

    def _end(self, data: dict[str, Any]) -> ChatGenerationChunk:
        if data.get("status") != "succeeded":
            error = self.error or {}
            raise ClientError(0, error.get("type", f"job_{data.get('status')}"),
                              error.get("message", f"job {self.job_id} ended {data.get('status')}"))
        usage = data.get("usage") or {}
        return ChatGenerationChunk(message=AIMessageChunk(
            content="", id=self.job_id, chunk_position="last",
            usage_metadata={"input_tokens": usage.get("input_tokens", 0),
                            "output_tokens": usage.get("output_tokens", 0),
                            "total_tokens": usage.get("total_tokens", 0)},
            response_metadata={"finish_reason": data.get("finish_reason"), "job_id": self.job_id,
                               "model_name": self.model},
        ))
