"""tokenrelay.engine.runner: model output -> stream events, and errors a client may safely see."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessageChunk, HumanMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult

from tokenrelay import events
from tokenrelay.core import protocol
from tokenrelay.core.settings import Settings
from tokenrelay.engine import runner
from tokenrelay.engine.demo import DemoChatModel
from tokenrelay.engine.models import ChatModels, GenerationParams, build_chat_model
from tokenrelay.errors import ModelNotConfigured, UnknownModel

SECRET = "sk-live-THIS-MUST-NOT-LEAK-1234"


class ScriptedModel(BaseChatModel):
    """Streams the given chunks as they are (to test what the runner does with odd provider output)."""

    script: list[AIMessageChunk]

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _stream(self, messages, stop=None, run_manager=None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        for message in self.script:
            yield ChatGenerationChunk(message=message)

    def _generate(self, messages, stop=None, run_manager=None, **kwargs: Any) -> ChatResult:
        raise NotImplementedError


def run(model: BaseChatModel, prompt: str = "hello") -> tuple[list[runner.Event], runner.Outcome]:
    outcome = runner.Outcome()

    async def collect():
        return [event async for event in runner.stream_chat(model, [HumanMessage(prompt)], outcome)]

    return asyncio.run(collect()), outcome


@pytest.mark.parametrize("max_tokens", [1, 9, 100])
def test_stream_chat_over_demo_model(max_tokens):
    events, outcome = run(DemoChatModel(max_tokens=max_tokens, tokens_per_second=0), "a b c")
    assert [e.event for e in events] == [protocol.TOKEN] * max_tokens
    assert [e.data["index"] for e in events] == list(range(max_tokens))
    assert all(set(e.data) == {"text", "index"} and e.data["text"] for e in events)
    assert outcome.text == "".join(e.data["text"] for e in events)
    assert outcome.text.startswith("You asked: a b c"[: len(outcome.text)])
    assert outcome.tokens == max_tokens
    assert outcome.usage == {"input_tokens": 3, "output_tokens": max_tokens, "total_tokens": 3 + max_tokens}
    assert outcome.finish_reason == "length"


def test_empty_chunks_make_no_events_and_indexes_stay_contiguous():
    script = [AIMessageChunk(content=""), AIMessageChunk(content="Hi"), AIMessageChunk(content=""),
              AIMessageChunk(content=[{"type": "text", "text": " there"}, {"type": "image", "url": "x"}]),
              AIMessageChunk(content=[" again", {"type": "text", "text": "!"}])]
    events, outcome = run(ScriptedModel(script=script))
    assert [(e.data["index"], e.data["text"]) for e in events] == [(0, "Hi"), (1, " there"), (2, " again!")]
    assert outcome.text == "Hi there again!"


def test_outcome_defaults_when_provider_reports_no_usage_or_finish_reason():
    events, outcome = run(ScriptedModel(script=[AIMessageChunk(content="a"), AIMessageChunk(content="b")]))
    assert len(events) == 2
    assert outcome.finish_reason == "stop"
    assert outcome.usage == {"input_tokens": 0, "output_tokens": 2, "total_tokens": 2}


def test_provider_usage_and_finish_reason_are_taken_from_any_chunk():
    script = [
        AIMessageChunk(content="x"),
        AIMessageChunk(content="", response_metadata={"finish_reason": "content_filter"}),
        AIMessageChunk(content="", usage_metadata={"input_tokens": 11, "output_tokens": 1, "total_tokens": 12}),
    ]
    events, outcome = run(ScriptedModel(script=script))
    assert len(events) == 1
    assert outcome.finish_reason == "content_filter"
    assert outcome.usage == {"input_tokens": 11, "output_tokens": 1, "total_tokens": 12}


def test_stop_param_reaches_the_model():
    # A client's stop sequences reach the model built for the job.
    settings = Settings(models=["demo"])
    params = GenerationParams.from_dict({"max_tokens": 50, "stop": "worker", "tokens_per_second": 0}, 64)
    assert params.stop == ("worker",)
    _, outcome = run(build_chat_model("demo", params, settings), "")
    assert "worker" not in outcome.text
    assert outcome.finish_reason == "stop"


def test_end_event_carries_usage_or_counts_tokens():
    outcome = runner.Outcome(text_parts=["a", "b"], tokens=2)
    end = events.end("cancelled", outcome.final_usage, "cancelled")
    assert end.event == protocol.END
    assert end.data == {"status": "cancelled", "finish_reason": "cancelled",
                        "usage": {"input_tokens": 0, "output_tokens": 2, "total_tokens": 2}}
    outcome.usage = {"input_tokens": 5, "output_tokens": 2, "total_tokens": 7}
    assert events.end("succeeded", outcome.final_usage, "stop").data["usage"] == outcome.usage
    assert events.end("failed", None, "error").data["usage"]["output_tokens"] == 0


# -- errors ------------------------------------------------------------------------------------

REQUEST = httpx.Request("POST", f"https://api.example.test/v1/chat/completions?key={SECRET}")


@pytest.mark.parametrize(
    "exc, kind",
    [
        (openai.AuthenticationError(f"Incorrect API key provided: {SECRET}",
                                    response=httpx.Response(401, request=REQUEST), body={"key": SECRET}),
         "provider_error"),
        (openai.RateLimitError(f"quota for {SECRET}", response=httpx.Response(429, request=REQUEST), body=None),
         "provider_error"),
        (openai.APIConnectionError(message=f"cannot reach {SECRET}", request=REQUEST), "provider_unavailable"),
        (httpx.ConnectError(f"connect to {SECRET} refused", request=REQUEST), "provider_unavailable"),
        (httpx.ReadTimeout(f"read {SECRET}", request=REQUEST), "provider_unavailable"),
        (httpx.HTTPStatusError(f"500 for {SECRET}", request=REQUEST, response=httpx.Response(500, request=REQUEST)),
         "provider_error"),
        (ModelNotConfigured(f"OPENAI_API_KEY={SECRET} is not usable"), "configuration_error"),
        (RuntimeError(f"prompt was: my password is {SECRET}"), "internal_error"),
        (ValueError(SECRET), "internal_error"),
        (TimeoutError(SECRET), "timeout"),
    ],
)
def test_error_event_is_classified_and_never_carries_exception_text(exc, kind):
    event = runner.error_event(exc)
    assert event.event == protocol.ERROR
    assert event.data == {"type": kind, "message": events.ERROR_MESSAGES[kind]}
    assert SECRET not in protocol.dumps(event.data)
    assert "sk-" not in protocol.dumps(event.data)


def test_classify_timeouts():
    assert runner.classify_error(TimeoutError()) == "timeout"
    assert runner.classify_error(asyncio.TimeoutError()) == "timeout"


def test_a_worker_builds_each_model_once_and_shares_it_between_jobs():
    settings = Settings(models=["demo"])
    models = ChatModels(settings, capacity=2)
    short = GenerationParams.from_dict({"max_tokens": 3, "tokens_per_second": 0}, 64)
    long = GenerationParams.from_dict({"max_tokens": 9, "tokens_per_second": 0}, 64)
    first = models.get("demo", short)
    assert models.get("demo", GenerationParams.from_dict({"max_tokens": 3, "tokens_per_second": 0}, 64)) is first
    assert models.get("demo", long) is not first

    async def both():  # two jobs streaming from one shared model at once each get their own output
        async def collect(model, prompt):
            outcome = runner.Outcome()
            return [e async for e in runner.stream_chat(model, [HumanMessage(prompt)], outcome)], outcome
        return await asyncio.gather(collect(first, "one"), collect(models.get("demo", short), "two"))

    (one, one_outcome), (two, two_outcome) = asyncio.run(both())
    assert len(one) == len(two) == 3
    assert one_outcome.text == "You asked: one"[: len(one_outcome.text)]
    assert two_outcome.text == "You asked: two"[: len(two_outcome.text)]


def test_the_least_recently_used_model_is_dropped_when_the_cache_is_full():
    models = ChatModels(Settings(models=["demo"]), capacity=2)
    params = [GenerationParams.from_dict({"max_tokens": n}, 64) for n in (1, 2, 3)]
    first, second = models.get("demo", params[0]), models.get("demo", params[1])
    assert models.get("demo", params[0]) is first  # now the most recently used
    models.get("demo", params[2])  # over capacity: drops params[1]'s model
    assert models.get("demo", params[0]) is first
    assert models.get("demo", params[1]) is not second


def test_a_model_the_settings_do_not_allow_is_refused_every_time():
    models = ChatModels(Settings(models=["demo"]))
    for _ in range(2):
        with pytest.raises(UnknownModel):
            models.get("openai:gpt-4o-mini", GenerationParams(max_tokens=5))
