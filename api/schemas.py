"""Request and response bodies of the HTTP API (they are also its OpenAPI schema)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .tool_schemas import ToolCall, ToolFields

MAX_STOP_SEQUENCES = 4


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty or only whitespace")
    return text


# Text a model is asked about: whitespace alone asks nothing. The length constraint stays inside the
# type: it is what makes pydantic refuse a lone surrogate ("\ud800"), which no encoder can write.
PromptText = Annotated[str, StringConstraints(min_length=1), AfterValidator(_not_blank)]


# Message text that may be empty (a tool's answer; an assistant turn that only calls tools). The length
# constraint makes pydantic refuse a lone surrogate, as for PromptText.
MessageText = Annotated[str, StringConstraints(min_length=0)]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant", "tool"]
    tool_calls: list[ToolCall] | None = Field(default=None, description="An assistant message's tool calls.")
    content: MessageText = Field(default="", validate_default=True, description="Required, except in an "
                                 "assistant message with `tool_calls` and in a tool message.")
    tool_call_id: str | None = Field(default=None, min_length=1, max_length=200,
                                     description="A tool message: the call it answers.")
    name: str | None = Field(default=None, min_length=1, max_length=64, description="A tool message: the tool's name.")

    @model_validator(mode="after")
    def _check_role(self) -> "ChatMessage":
        if self.tool_calls is not None and self.role != "assistant":
            raise ValueError("only assistant messages carry `tool_calls`")
        if (self.tool_call_id is not None or self.name is not None) and self.role != "tool":
            raise ValueError("only tool messages carry `tool_call_id` and `name`")
        if self.role == "tool" and self.tool_call_id is None:
            raise ValueError("a tool message needs `tool_call_id`")
        return self

    @field_validator("content")
    @classmethod
    def _content_needed(cls, content: str, info: ValidationInfo) -> str:
        role, calls = info.data.get("role"), info.data.get("tool_calls")
        if role == "tool" or (role == "assistant" and calls):
            return content
        return _not_blank(content)


class GenerationParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # strict: `true` or `1.5` is not a token count.
    max_tokens: int | None = Field(default=None, ge=1, strict=True, description="Tokens to generate (1..server limit).")
    temperature: float | None = Field(default=None, ge=0, le=2)
    stop: str | list[str] | None = Field(default=None, description=f"Up to {MAX_STOP_SEQUENCES} stop sequences.")
    tokens_per_second: float | None = Field(
        default=None, ge=0, le=100_000, description="`demo` model only: its pace (0 = as fast as possible)."
    )
    start_delay_s: float | None = Field(
        default=None, ge=0, le=60, description="`demo` model only: seconds it waits before its first token "
        "(so readers can join a job before it produces anything)."
    )

    @model_validator(mode="after")
    def _check_stop(self) -> "GenerationParams":
        if isinstance(self.stop, list) and len(self.stop) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences")
        return self


StreamMode = Literal["messages", "custom", "updates", "values"]


class JobRequest(ToolFields):
    model_config = ConfigDict(extra="forbid")
    model: str | None = Field(default=None, min_length=1, max_length=200, examples=["demo"],
                              description="Required for a model job; for a graph job, its chat model (default demo).")
    messages: list[ChatMessage] | None = Field(default=None, description="The conversation; or give `prompt`.")
    prompt: PromptText | None = Field(default=None, description="Shorthand for one user message.")
    graph: str | None = Field(default=None, min_length=1, max_length=200, examples=["joke_poem"],
                              description="Run a registered LangGraph graph instead of one model call.")
    input: dict[str, Any] | None = Field(default=None, description="A graph job's input state.")
    stream_mode: StreamMode | list[StreamMode] | None = Field(
        default=None, description="A graph job's LangGraph stream modes (default [\"messages\"]).")
    params: GenerationParams = Field(default_factory=GenerationParams)
    metadata: dict[str, Any] = Field(default_factory=dict, description="Echoed back, never interpreted.")
    stream: bool = Field(default=False, description="Answer with the job's event stream (200, SSE) instead of "
                         "202 JSON; the job id is in the X-Tokenrelay-Job-Id and Location headers.")

    @model_validator(mode="after")
    def _one_input(self) -> "JobRequest":
        if self.graph is not None:
            if self.messages is not None or self.prompt is not None:
                raise ValueError("a graph job takes `input`, not `messages` or `prompt`")
            if isinstance(self.stream_mode, list) and not self.stream_mode:
                raise ValueError("`stream_mode` must not be empty")
            if self.tool_fields_given():
                raise ValueError("a graph job's tools are its graph's: `tools`, `tool_choice`, "
                                 "`parallel_tool_calls` and `response_format` are for model jobs")
            return self
        if self.input is not None or self.stream_mode is not None:
            raise ValueError("`input` and `stream_mode` need a `graph`")
        if self.model is None:
            raise ValueError("give `model` (with `messages` or `prompt`) or `graph`")
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("give exactly one of `messages` or `prompt`")
        if self.messages is not None and not self.messages:
            raise ValueError("`messages` must not be empty")
        return self

    def stream_modes(self) -> list[str]:
        modes = [self.stream_mode] if isinstance(self.stream_mode, str) else self.stream_mode or ["messages"]
        return list(dict.fromkeys(modes))

    def chat_messages(self) -> list[dict[str, Any]]:
        if self.prompt is not None:
            return [{"role": "user", "content": self.prompt}]
        return [message.model_dump(exclude_none=True) for message in self.messages or []]


class JobCreated(BaseModel):
    id: str
    status: str = Field(description="`queued` for a new job; a repeat with the same Idempotency-Key gets the "
                                    "job's status now.")
    model: str
    created_at: str
    stream_url: str
    metadata: dict[str, Any]
    graph: str | None = None


class JobOutput(BaseModel):
    text: str | None
    tool_calls: list[dict[str, Any]] | None = Field(
        default=None, description="A model job's tool calls (`index`, `id`, `name`, `args`), once it finished.")
    state: Any = Field(default=None, description="A graph job's final state, once it finished.")


class JobError(BaseModel):
    type: str
    message: str


class JobView(BaseModel):
    id: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    model: str
    created_at: str
    started_at: str | None
    finished_at: str | None
    attempt: int
    output: JobOutput
    usage: dict[str, int] | None
    error: JobError | None
    finish_reason: str | None
    metadata: dict[str, Any]
    graph: str | None = None


class CancelResult(BaseModel):
    id: str
    status: str
    cancelled: bool = Field(description="False when the job had already finished: nothing was done.")
    detail: str


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ok", "unavailable"]
    redis: bool
    workers: int


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail
