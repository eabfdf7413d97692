"""`RelayChatModel`: a LangChain chat model whose calls run as jobs on a tokenrelay worker fleet.

`invoke`, `stream`, `astream` and `astream_events` submit a job to a gateway and yield its tokens as
they arrive, so existing LangChain code moves to the workers by changing the model line. Each message's
`id` is its job's id.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    message_chunk_to_message,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

from .client import DEFAULT_BASE_URL, AsyncClient, Client
from .errors import ClientError
from .events import Event

ROLES = {"system": "system", "human": "user", "ai": "assistant"}


def to_job_messages(messages: list[BaseMessage]) -> list[dict[str, str]]:
    out = []
    for message in messages:
        role = ROLES.get(message.type)
        if role is None:
            raise ValueError(f"RelayChatModel sends system, user and assistant messages, not {message.type!r}")
        text = message.text if isinstance(message.text, str) else str(message.content)
        if text:
            out.append({"role": role, "content": text})
    return out


class _Replay:
    """Turns a job's events into chunks. After a `reset` the new attempt's text is checked against
    what was already yielded: chunks cannot be taken back, so the repeat is swallowed, and a run
    that starts over with different text is an error rather than silently wrong output."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.yielded = ""
        self.attempt_text: str | None = None  # text of the attempt after a reset
        self.error: dict[str, Any] | None = None

    def feed(self, event: Event) -> ChatGenerationChunk | None:
        if event.event == "token":
            return self._token(event.data["text"])
        if event.event == "reset":
            self.attempt_text = ""
        elif event.event == "error":
            self.error = event.data
        elif event.event == "end":
            return self._end(event.data)
        return None

    def _token(self, text: str) -> ChatGenerationChunk | None:
        if self.attempt_text is not None:
            self.attempt_text += text
            if self.yielded.startswith(self.attempt_text):
                return None
            if not self.attempt_text.startswith(self.yielded):
                raise ClientError(0, "reset_diverged", f"job {self.job_id} restarted and produced other output "
                                  "than was already streamed")
            text, self.attempt_text = self.attempt_text[len(self.yielded):], None
        self.yielded += text
        return ChatGenerationChunk(message=AIMessageChunk(content=text, id=self.job_id))

    def _end(self, data: dict[str, Any]) -> ChatGenerationChunk:
        if data.get("status") != "succeeded":
            error = self.error or {}
            raise ClientError(0, error.get("type", f"job_{data.get('status')}"),
                              error.get("message", f"job {self.job_id} ended {data.get('status')}"))
        usage = data.get("usage") or {}
        return ChatGenerationChunk(message=AIMessageChunk(
            content="", id=self.job_id,
            usage_metadata={"input_tokens": usage.get("input_tokens", 0),
                            "output_tokens": usage.get("output_tokens", 0),
                            "total_tokens": usage.get("total_tokens", 0)},
            response_metadata={"finish_reason": data.get("finish_reason"), "job_id": self.job_id},
        ))


class RelayChatModel(BaseChatModel):
    """A chat model served by a tokenrelay gateway: `RelayChatModel(base_url=..., model="openai:gpt-4o-mini")`."""

    base_url: str = DEFAULT_BASE_URL
    model: str = "demo"
    params: dict[str, Any] = {}
    api_key: str | None = None
    timeout_s: float = 30.0

    @property
    def _llm_type(self) -> str:
        return "tokenrelay"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "model": self.model, "params": self.params}

    def _body(self, messages: list[BaseMessage], stop: list[str] | None) -> dict[str, Any]:
        params = dict(self.params)
        if stop:
            params["stop"] = stop
        return {"messages": to_job_messages(messages), "model": self.model, "params": params or None}

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        with Client(self.base_url, api_key=self.api_key, timeout_s=self.timeout_s) as client:
            job = client.submit(**self._body(messages, stop))
            replay, finished = _Replay(job["id"]), False
            try:
                for event in client.stream(job["id"]):
                    chunk = replay.feed(event)
                    if chunk is not None:
                        if run_manager and chunk.text:
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
            job = await client.submit(**self._body(messages, stop))
            replay, finished = _Replay(job["id"]), False
            try:
                async for event in client.stream(job["id"]):
                    chunk = replay.feed(event)
                    if chunk is not None:
                        if run_manager and chunk.text:
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
        message = AIMessage(content="") if merged is None else message_chunk_to_message(merged.message)
        return ChatResult(generations=[ChatGeneration(message=message)])

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        merged = None
        async for chunk in self._astream(messages, stop, run_manager, **kwargs):
            merged = chunk if merged is None else merged + chunk
        message = AIMessage(content="") if merged is None else message_chunk_to_message(merged.message)
        return ChatResult(generations=[ChatGeneration(message=message)])


def _quietly(call, *args: Any) -> None:
    try:
        call(*args)
    except Exception:  # noqa: BLE001 - best effort; the job may have ended
        pass
