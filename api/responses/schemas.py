"""`POST /v1/responses` bodies: what is served, what is ignored, what is refused with a 400 naming it.

Deliberate choices (read before changing):
- Fields that would change what the client gets back and that tokenrelay cannot honour (built-in
  tools, reasoning, structured output, several outputs, image/audio/file input...) are refused by name,
  never silently ignored; `function` tools go to the job (api/responses/tools.py). Fields that change
  nothing a client can see here (`user`, `prompt_cache_key`, `service_tier`, `top_p`...) are accepted and
  ignored, as on chat completions.
- Input items are normalised to message items of text, `function_call` and `function_call_output`
  items; they become the job's messages (assistant `tool_calls`, `tool` messages); the request's own
  items are kept with the job (for `input_items` and for `previous_response_id` chains).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tokenrelay.errors import InvalidRequest

from .tools import call_item, job_args, job_tool_choice, job_tools, output_item

# Accepted and ignored: they change nothing a client of tokenrelay can observe.
IGNORED_FIELDS = frozenset({
    "user", "safety_identifier", "prompt_cache_key", "prompt_cache_retention", "service_tier", "top_p",
    "stream_options", "truncation", "include_obfuscation",
})
# OpenAI's `developer` role is its newer name for `system`.
ROLE_MAP = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
TEXT_PART_TYPES = frozenset({"input_text", "output_text", "text"})


class ResponseRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1, max_length=200, examples=["demo"])
    input: str | list[dict[str, Any]] = Field(description="A string, or message items with text content.")
    instructions: str | None = None
    max_output_tokens: int | None = Field(default=None, ge=1, strict=True)
    temperature: float | None = Field(default=None, ge=0, le=2)
    metadata: dict[str, str] | None = Field(default=None, max_length=16)
    stream: bool = False
    background: bool = False
    previous_response_id: str | None = Field(default=None, max_length=100)
    store: bool = True
    tokens_per_second: float | None = Field(
        default=None, ge=0, le=100_000, description="tokenrelay extension: pace of the `demo` model.")
    tools: list[Any] | None = Field(default=None, description="`function` tools (built-in tools are refused).")
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    # Accepted only in the values that mean "nothing special".
    text: dict[str, Any] | None = None
    include: list[str] | None = None

    def check_supported(self) -> None:
        refused = sorted(name for name in (self.model_extra or {}) if name not in IGNORED_FIELDS)
        fmt = (self.text or {}).get("format") or {"type": "text"}
        if not isinstance(fmt, dict) or fmt.get("type") != "text" or set(self.text or {}) - {"format", "verbosity"}:
            refused.append("text")
        if self.include:
            refused.append("include")
        if refused:
            raise InvalidRequest(f"not supported by tokenrelay: {', '.join(refused)}", param=refused[0])
        if self.background and not self.store:
            raise InvalidRequest("a background response must be stored: drop `store: false`", param="store")

    def job_tool_fields(self) -> dict[str, Any]:
        """`tools`, `tool_choice` and `parallel_tool_calls` in a job's shape (checked against limits later)."""
        fields: dict[str, Any] = {}
        if self.tools:
            fields["tools"] = job_tools(self.tools)
        if self.tool_choice is not None and (self.tools or self.tool_choice not in ("none", "auto")):
            fields["tool_choice"] = job_tool_choice(self.tool_choice)
        if self.parallel_tool_calls is not None and self.tools:
            fields["parallel_tool_calls"] = self.parallel_tool_calls
        return fields

    def input_items(self) -> list[dict[str, Any]]:
        """The request's own input as message items, each with text content only."""
        if isinstance(self.input, str):
            return [_item("user", [{"type": "input_text", "text": self.input}])]
        items = [_input_item(raw, position) for position, raw in enumerate(self.input)]
        if not items:
            raise InvalidRequest("`input` must not be empty", param="input")
        return items


def _item(role: str, content: list[dict[str, str]]) -> dict[str, Any]:
    return {"type": "message", "role": role, "content": content}


def _input_item(raw: dict[str, Any], position: int) -> dict[str, Any]:
    where = f"input[{position}]"
    kind = raw.get("type", "message")
    if kind == "function_call":
        return call_item(raw, where)
    if kind == "function_call_output":
        return output_item(raw, where)
    if kind != "message":
        raise InvalidRequest(f"{where}: item type `{str(kind)[:40]}` is not supported (message, function_call "
                             "and function_call_output items only)", param=where)
    role = raw.get("role")
    if role not in ROLE_MAP:
        raise InvalidRequest(f"{where}.role must be one of {', '.join(ROLE_MAP)}", param=f"{where}.role")
    content = raw.get("content")
    if isinstance(content, str):
        parts = [{"type": "input_text" if role != "assistant" else "output_text", "text": content}]
    elif isinstance(content, list):
        parts = []
        for index, part in enumerate(content):
            part_type = part.get("type") if isinstance(part, dict) else None
            if part_type not in TEXT_PART_TYPES or not isinstance(part.get("text"), str):
                name = f"{where}.content[{index}]"
                raise InvalidRequest(f"{name}: content type `{part_type}` is not supported (text only)", param=name)
            parts.append({"type": part_type if part_type != "text" else "input_text", "text": part["text"]})
    else:
        raise InvalidRequest(f"{where}.content must be a string or a list of text parts", param=f"{where}.content")
    return _item(role, parts)


def item_messages(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chat messages for the job (empty text messages dropped: they carry nothing a model can use).
    Adjacent `function_call` items join the assistant message just before them, or make one: chat messages
    carry an assistant turn's text and calls together."""
    messages: list[dict[str, Any]] = []
    for item in items:
        if item["type"] == "function_call":
            call = {"id": item["call_id"], "name": item["name"], "args": job_args(item["arguments"])}
            if messages and messages[-1]["role"] == "assistant":
                messages[-1].setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif item["type"] == "function_call_output":
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": item["output"]})
        elif text := "".join(part["text"] for part in item["content"]):
            messages.append({"role": ROLE_MAP[item["role"]], "content": text})
    return messages


ResponseStatus = Literal["queued", "in_progress", "completed", "failed", "cancelled", "incomplete"]
