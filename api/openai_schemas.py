"""Request bodies of the OpenAI-compatible endpoints, and their translation into a tokenrelay job.

Unknown fields are ignored, not refused: OpenAI clients send many (`user`, `seed`, `top_p`...)
that have no meaning here. Fields that would change the answer's shape (`n` > 1, tools) are refused.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .schemas import MAX_STOP_SEQUENCES, GenerationParams, JobRequest

# OpenAI's `developer` role is its newer name for `system`.
ROLE_MAP = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: str


class OpenAIMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
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

    @model_validator(mode="after")
    def _check(self) -> "ChatCompletionRequest":
        if isinstance(self.stop, list) and len(self.stop) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences")
        if not any(message.text().strip() for message in self.messages):
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
        # Empty messages (an assistant turn with only tool calls, say) carry nothing a chat model here can use.
        messages = [{"role": ROLE_MAP[m.role], "content": m.text()} for m in self.messages if m.text().strip()]
        params = GenerationParams(
            max_tokens=self.max_completion_tokens or self.max_tokens,
            temperature=self.temperature,
            stop=self.stop,
            tokens_per_second=self.tokens_per_second,
        )
        metadata = {key: value for key, value in (self.metadata or {}).items()}
        metadata["api"] = "chat.completions"
        return JobRequest(model=self.model, messages=messages, params=params, metadata=metadata)
