"""Tools in request bodies: OpenAI's function-tool JSON, `tool_choice`, `response_format`, and tool calls in
messages; and the gateway's checks of them against the limits in settings.

The gateway only checks shapes and sizes: tool arguments are model output, relayed as JSON and never
executed anywhere in tokenrelay.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tokenrelay.core import protocol
from tokenrelay.core.registry import supports_response_format
from tokenrelay.core.settings import Settings
from tokenrelay.errors import InvalidRequest

NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"
TOOL_CHOICES = ("auto", "none", "required")


def _encodable(value: Any, what: str) -> None:
    # JSON text may hold a lone surrogate ("\ud800"), which no encoder can write: refuse it here.
    try:
        protocol.dumps(value).encode()
    except UnicodeEncodeError:
        raise ValueError(f"{what} must be valid Unicode text (it holds a lone surrogate)") from None


class FunctionSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME_PATTERN, description="Letters, digits, `_` and `-`, at most 64.")
    description: str | None = None
    parameters: dict[str, Any] | None = Field(default=None, description="A JSON schema of the arguments "
                                              "(`\"type\": \"object\"`).")
    strict: bool | None = None

    @model_validator(mode="after")
    def _object_schema(self) -> "FunctionSpec":
        if self.parameters is not None and self.parameters.get("type", "object") != "object":
            raise ValueError("`parameters` must be a JSON schema of type `object`")
        _encodable([self.description, self.parameters], "a tool's description and parameters")
        return self


class ToolSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: str = Field(description="`function`: the only kind a job can take.", examples=["function"])
    function: FunctionSpec | None = None

    @model_validator(mode="after")
    def _function_only(self) -> "ToolSpec":
        if self.type != "function":
            raise ValueError(f"only `function` tools are supported, not {self.type[:40]!r} "
                             "(built-in provider tools do not run here)")
        if self.function is None:
            raise ValueError("a function tool needs `function`")
        return self


class NamedFunction(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME_PATTERN)


class NamedToolChoice(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["function"]
    function: NamedFunction


ToolChoice = Literal["auto", "none", "required"] | NamedToolChoice


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: str = Field(pattern=NAME_PATTERN)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None

    @model_validator(mode="after")
    def _text(self) -> "JsonSchemaFormat":
        _encodable([self.description, self.schema_], "`json_schema`")
        return self


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> "ResponseFormat":
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError("`json_schema` goes with type `json_schema`, and only with it")
        return self


class ToolCall(BaseModel):
    """A call an assistant message made: the shape of the `tool_call` event and of `output.tool_calls`."""

    model_config = ConfigDict(extra="ignore")  # `index` and `type`, as the stream carries them, are welcome
    id: str = Field(min_length=1, max_length=200)
    name: str = Field(pattern=NAME_PATTERN)
    args: dict[str, Any] | str = Field(default_factory=dict, description="A JSON object, or the raw text a "
                                       "model wrote when that was not one (relayed as it is).")

    @model_validator(mode="after")
    def _text(self) -> "ToolCall":
        _encodable(self.args, "`args`")
        return self


class ToolFields(BaseModel):
    """The tool fields a model job may carry (on `/v1/jobs` and, translated, on chat completions)."""

    tools: list[ToolSpec] | None = Field(default=None, description="Function tools the model may call.")
    tool_choice: ToolChoice | None = Field(default=None, description="`auto`, `none`, `required` or "
                                           "`{\"type\": \"function\", \"function\": {\"name\"}}`.")
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = Field(
        default=None, description="`json_schema` or `json_object`: only for models that honour it (`openai:*`).")

    def tool_fields_given(self) -> bool:
        return any(value is not None for value in
                   (self.tools, self.tool_choice, self.parallel_tool_calls, self.response_format))

    def tool_request(self, model: str, settings: Settings) -> dict[str, Any]:
        """The tool part of the stored request, after the checks a schema cannot make."""
        doc: dict[str, Any] = {}
        names = [tool.function.name for tool in self.tools or ()]
        if self.tools is not None:
            if len(self.tools) > settings.max_tools:
                raise InvalidRequest(f"at most {settings.max_tools} tools per job (max_tools)", param="tools")
            if len(set(names)) != len(names):
                raise InvalidRequest("tool names must be unique", param="tools")
            doc["tools"] = [tool.model_dump(exclude_none=True) for tool in self.tools]
            for position, tool in enumerate(doc["tools"]):
                _check_size(tool, settings, f"tools.{position}")
        if self.tool_choice is not None:
            if not names:
                raise InvalidRequest("`tool_choice` needs `tools`", param="tool_choice")
            if isinstance(self.tool_choice, NamedToolChoice) and self.tool_choice.function.name not in names:
                raise InvalidRequest(f"tool_choice names {self.tool_choice.function.name!r}, which is not in "
                                     "`tools`", param="tool_choice")
            choice = self.tool_choice
            doc["tool_choice"] = choice if isinstance(choice, str) else choice.model_dump()
        if self.parallel_tool_calls is not None:
            doc["parallel_tool_calls"] = self.parallel_tool_calls
        if self.response_format is not None and self.response_format.type != "text":
            if not supports_response_format(model):
                raise InvalidRequest(f"model {model!r} cannot honour `response_format` "
                                     f"{self.response_format.type!r}; use tools, or an openai:* model",
                                     param="response_format")
            doc["response_format"] = self.response_format.model_dump(exclude_none=True, by_alias=True)
            _check_size(doc["response_format"], settings, "response_format")
        return doc


def _check_size(value: Any, settings: Settings, param: str) -> None:
    size = len(protocol.dumps(value).encode())
    if size > settings.max_tool_schema_bytes:
        raise InvalidRequest(f"{param} is {size} bytes of JSON; at most {settings.max_tool_schema_bytes} "
                             "(max_tool_schema_bytes)", param=param)
