"""Request and response bodies of the HTTP API (they are also its OpenAPI schema)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_STOP_SEQUENCES = 4


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant"]
    content: str = Field(min_length=1)


class GenerationParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # strict: `true` or `1.5` is not a token count.
    max_tokens: int | None = Field(default=None, ge=1, strict=True, description="Tokens to generate (1..server limit).")
    temperature: float | None = Field(default=None, ge=0, le=2)
    stop: str | list[str] | None = Field(default=None, description=f"Up to {MAX_STOP_SEQUENCES} stop sequences.")
    tokens_per_second: float | None = Field(
        default=None, ge=0, le=100_000, description="`demo` model only: its pace (0 = as fast as possible)."
    )

    @model_validator(mode="after")
    def _check_stop(self) -> "GenerationParams":
        if isinstance(self.stop, list) and len(self.stop) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences")
        return self


class JobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1, max_length=200, examples=["demo"])
    messages: list[ChatMessage] | None = Field(default=None, description="The conversation; or give `prompt`.")
    prompt: str | None = Field(default=None, min_length=1, description="Shorthand for one user message.")
    params: GenerationParams = Field(default_factory=GenerationParams)
    metadata: dict[str, Any] = Field(default_factory=dict, description="Echoed back, never interpreted.")

    @model_validator(mode="after")
    def _one_input(self) -> "JobRequest":
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("give exactly one of `messages` or `prompt`")
        if self.messages is not None and not self.messages:
            raise ValueError("`messages` must not be empty")
        return self

    def chat_messages(self) -> list[dict[str, str]]:
        if self.prompt is not None:
            return [{"role": "user", "content": self.prompt}]
        return [message.model_dump() for message in self.messages or []]


class JobCreated(BaseModel):
    id: str
    status: Literal["queued"]
    model: str
    created_at: str
    stream_url: str
    metadata: dict[str, Any]


class JobOutput(BaseModel):
    text: str | None


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
