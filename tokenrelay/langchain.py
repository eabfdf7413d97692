"""`RelayChatModel`: a LangChain chat model whose calls run as jobs on a tokenrelay worker fleet.

`invoke`, `stream`, `astream` and `astream_events` submit a job to a gateway and yield its tokens as
they arrive, so existing LangChain code moves to the workers by changing the model line. Each message's
`id` is its job's id. `bind_tools` and `with_structured_output` send tools (or a JSON schema) with the job;
tool calls come back as `tool_call_chunks` / `tool_calls`, never executed by tokenrelay.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from operator import itemgetter
from typing import Any, Literal

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage, message_chunk_to_message
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_json_schema, convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass
from pydantic import model_validator

from ._langchain_messages import Replay, job_tool_choice, job_tools, to_job_messages
from .client import DEFAULT_BASE_URL, AsyncClient, Client

__all__ = ["RelayChatModel", "to_job_messages"]

# Call options that travel with the job as they are (after `bind_tools` / `with_structured_output`).
JOB_OPTIONS = ("tools", "tool_choice", "parallel_tool_calls", "response_format")


class RelayChatModel(BaseChatModel):
    """A chat model served by a tokenrelay gateway: `RelayChatModel(base_url=..., model="openai:gpt-4o-mini")`.

    `base_url` and `api_key` default to `$TOKENRELAY_URL` and `$TOKENRELAY_API_KEY`, like the CLI's.
    """

    base_url: str = DEFAULT_BASE_URL
    model: str = "demo"
    params: dict[str, Any] = {}
    api_key: str | None = None
    timeout_s: float = 30.0

    @model_validator(mode="before")
    @classmethod
    def _from_environment(cls, values: Any) -> Any:
        if isinstance(values, dict):
            values = dict(values)
            if values.get("base_url") is None and os.environ.get("TOKENRELAY_URL"):
                values["base_url"] = os.environ["TOKENRELAY_URL"]
            if values.get("api_key") is None and os.environ.get("TOKENRELAY_API_KEY"):
                values["api_key"] = os.environ["TOKENRELAY_API_KEY"]
        return values

    @property
    def _llm_type(self) -> str:
        return "tokenrelay"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "model": self.model, "params": self.params}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any):
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = "tokenrelay"
        params["ls_model_name"] = kwargs.get("model") or self.model
        return params

    def bind_tools(self, tools: Sequence[dict[str, Any] | type | Callable | BaseTool], *,
                   tool_choice: str | bool | dict | None = None, parallel_tool_calls: bool | None = None,
                   **kwargs: Any) -> Runnable[LanguageModelInput, AIMessage]:
        """Send these tools with each job. `tool_choice`: "auto", "none", "required"/"any", or a tool's name."""
        if parallel_tool_calls is not None:
            kwargs["parallel_tool_calls"] = parallel_tool_calls
        return self.bind(tools=job_tools(list(tools)), tool_choice=job_tool_choice(tool_choice), **kwargs)

    def with_structured_output(self, schema: dict | type, *, include_raw: bool = False,
                               method: Literal["function_calling", "json_schema", "json_mode"] = "function_calling",
                               strict: bool | None = None, **kwargs: Any) -> Runnable[LanguageModelInput, Any]:
        """`function_calling` (any model: a forced call of one tool) or `json_schema` / `json_mode` (a
        `response_format`, for models that honour one: `openai:*`; others answer 400)."""
        if method == "function_calling":
            return super().with_structured_output(schema, include_raw=include_raw, **kwargs)
        if kwargs:
            raise ValueError(f"Received unsupported arguments {kwargs}")
        pydantic_schema = isinstance(schema, type) and is_basemodel_subclass(schema)
        if method == "json_schema":
            function = convert_to_openai_tool(schema)["function"]
            json_schema = {"name": function["name"], "schema": function.get("parameters") or {}}
            if strict is not None:
                json_schema["strict"] = strict
            response_format: dict[str, Any] = {"type": "json_schema", "json_schema": json_schema}
        elif method == "json_mode":
            response_format = {"type": "json_object"}
        else:
            raise ValueError(f"unknown method {method!r}: use function_calling, json_schema or json_mode")
        llm = self.bind(response_format=response_format, ls_structured_output_format={
            "kwargs": {"method": method}, "schema": convert_to_json_schema(schema)})
        parser = PydanticOutputParser(pydantic_object=schema) if pydantic_schema else JsonOutputParser()
        if not include_raw:
            return llm | parser
        parsed = RunnablePassthrough.assign(parsed=itemgetter("raw") | parser, parsing_error=lambda _: None)
        fallback = RunnablePassthrough.assign(parsed=lambda _: None)
        return RunnableMap(raw=llm) | parsed.with_fallbacks([fallback], exception_key="parsing_error")

    def _body(self, messages: list[BaseMessage], stop: list[str] | None, options: dict[str, Any]) -> dict[str, Any]:
        params = dict(self.params)
        if stop:
            params["stop"] = stop
        body = {"messages": to_job_messages(messages), "model": options.get("model") or self.model,
                "params": params or None}
        body.update({name: options[name] for name in JOB_OPTIONS if options.get(name) is not None})
        return body

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        with Client(self.base_url, api_key=self.api_key, timeout_s=self.timeout_s) as client:
            body = self._body(messages, stop, kwargs)
            job = client.submit(**body)
            replay, finished = Replay(job["id"], body["model"]), False
            try:
                for event in client.stream(job["id"]):
                    chunk = replay.feed(event)
                    if chunk is not None:
                        if run_manager:
                            run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                        yield chunk
                finished = True
            finally:
                if not finished:  # the caller stopped reading (or the stream failed): stop the work too
                    _quietly(client.cancel, job["id"])

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                       run_manager: AsyncCallbackManagerForLLMRun | None = None,
                       **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        async with AsyncClient(self.base_url, api_key=self.api_key, timeout_s=self.timeout_s) as client:
            body = self._body(messages, stop, kwargs)
            job = await client.submit(**body)
            replay, finished = Replay(job["id"], body["model"]), False
            try:
                async for event in client.stream(job["id"]):
                    chunk = replay.feed(event)
                    if chunk is not None:
                        if run_manager:
                            await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                        yield chunk
                finished = True
            finally:
                if not finished:
                    try:
                        await client.cancel(job["id"])
                    except Exception:  # noqa: BLE001 - best effort; the job may have ended
                        pass

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        merged = None
        for chunk in self._stream(messages, stop, run_manager, **kwargs):
            merged = chunk if merged is None else merged + chunk
        return _result(merged)

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        merged = None
        async for chunk in self._astream(messages, stop, run_manager, **kwargs):
            merged = chunk if merged is None else merged + chunk
        return _result(merged)


def _result(merged: ChatGenerationChunk | None) -> ChatResult:
    message = AIMessage(content="") if merged is None else message_chunk_to_message(merged.message)
    return ChatResult(generations=[ChatGeneration(message=message)])


def _quietly(call, *args: Any) -> None:
    try:
        call(*args)
    except Exception:  # noqa: BLE001 - best effort; the job may have ended
        pass
