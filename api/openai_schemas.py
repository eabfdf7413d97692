"""Request bodies of the OpenAI-compatible endpoints, and their translation into a tokenrelay job.

Unknown fields are ignored, not refused: OpenAI clients send many (`user`, `seed`, `top_p`...)
that have no meaning here. Fields that would change the answer's shape are honoured or refused, never
ignored: `n` > 1 and the legacy `functions` / `function_call` are refused; `tools`, `tool_choice`,
`parallel_tool_calls` and `response_format` go to the job (see tool_schemas.py for their checks).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tokenrelay.errors import InvalidRequest

from .schemas import MAX_STOP_SEQUENCES, GenerationParams, JobRequest
from .tool_schemas import NAME_PATTERN, ToolFields

# OpenAI's `developer` role is its newer name for `system`.
ROLE_MAP = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: str


class CalledFunction(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str = Field(pattern=NAME_PATTERN)
    arguments: str = Field(description="The arguments as a JSON object, in a string.")


class OpenAIToolCall(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str = Field(min_length=1, max_length=200)
    type: Literal["function"] = "function"
    function: CalledFunction

    def to_job(self) -> dict[str, Any]:
        try:
            args = json.loads(self.function.arguments or "{}")
        except ValueError:
            args = None
        # Arguments a model wrote that are not a JSON object go back as the text they were.
        args = args if isinstance(args, dict) else self.function.arguments
        return {"id": self.id, "name": self.function.name, "args": args}


class OpenAIMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    tool_calls: list[OpenAIToolCall] | None = None
    tool_call_id: str | None = Field(default=None, min_length=1, max_length=200)

    @model_validator(mode="after")
    def _check(self) -> "OpenAIMessage":
        if self.role == "tool" and self.tool_call_id is None:
            raise ValueError("a tool message needs `tool_call_id`")
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only assistant messages carry `tool_calls`")
        return self

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""

    def to_job(self) -> dict[str, Any] | None:
        """The job's message; None for one that carries nothing (an empty turn)."""
        doc: dict[str, Any] = {"role": ROLE_MAP[self.role], "content": self.text()}
        if self.tool_calls:
            doc["tool_calls"] = [call.to_job() for call in self.tool_calls]
        elif self.role == "tool":
            doc["tool_call_id"] = self.tool_call_id
        elif not doc["content"].strip():
            return None
        return doc


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class ChatCompletionRequest(ToolFields):
    model_config = ConfigDict(extra="ignore")
    model: str = Field(min_length=1, max_length=200, examples=["demo"])
    messages: list[OpenAIMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1, description="Wins over `max_tokens`.")
    temperature: float | None = Field(default=None, ge=0, le=2)
    stop: str | list[str] | None = None
    n: int = Field(default=1, ge=1, le=1, description="Only 1 choice per request.")
    tokens_per_second: float | None = Field(
        default=None, ge=0, le=100_000, description="tokenrelay extension: pace of the `demo` model."
    )
    metadata: dict[str, Any] | None = None
    functions: list[Any] | None = Field(default=None, description="Legacy: refused; use `tools`.")
    function_call: Any = Field(default=None, description="Legacy: refused; use `tool_choice`.")

    @model_validator(mode="after")
    def _check(self) -> "ChatCompletionRequest":
        if isinstance(self.stop, list) and len(self.stop) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences")
        if self.functions is not None or self.function_call is not None:
            raise ValueError("`functions` and `function_call` are not supported; use `tools` and `tool_choice`")
        if not any(message.text().strip() or message.tool_calls for message in self.messages):
            raise ValueError("`messages` must hold some text")
        return self

    @property
    def max_tokens_field(self) -> str:
        """The field the token count came from, as this API names it (for errors)."""
        return "max_completion_tokens" if self.max_completion_tokens else "max_tokens"

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def to_job(self) -> JobRequest:
        messages = [doc for doc in (m.to_job() for m in self.messages) if doc is not None]
        params = GenerationParams(
            max_tokens=self.max_completion_tokens or self.max_tokens,
            temperature=self.temperature,
            stop=self.stop,
            tokens_per_second=self.tokens_per_second,
        )
        metadata = {key: value for key, value in (self.metadata or {}).items()}
        metadata["api"] = "chat.completions"
        tools = self.model_dump(include={"tools", "tool_choice", "parallel_tool_calls", "response_format"},
                                exclude_none=True, by_alias=True)
        try:
            return JobRequest(model=self.model, messages=messages, params=params, metadata=metadata, **tools)
        except ValidationError as exc:  # a message the job format refuses (an empty user turn, say)
            error = exc.errors()[0]
            where = ".".join(str(part) for part in error.get("loc", ()))
            raise InvalidRequest(f"{where}: {error.get('msg', 'invalid')}".removeprefix(": "),
                                 param=where or None) from None
