"""tokenrelay.engine.demo.DemoChatModel: deterministic offline streaming through LangChain's machinery."""

from __future__ import annotations

import asyncio
import time

import pytest

from tokenrelay.engine.demo import DemoChatModel


def chunks(model: DemoChatModel, prompt: str, **kwargs):
    return [c for c in model.stream(prompt, **kwargs) if c.content]


def text_of(model: DemoChatModel, prompt: str, **kwargs) -> str:
    return "".join(c.content for c in chunks(model, prompt, **kwargs))


def final(model: DemoChatModel, prompt: str, **kwargs):
    """The chunk that carries usage and finish reason (LangChain may add an empty marker after it)."""
    carrying = [c for c in model.stream(prompt, **kwargs) if c.usage_metadata]
    assert len(carrying) == 1
    return carrying[0]


@pytest.mark.parametrize("max_tokens", [1, 7, 64, 300])
@pytest.mark.parametrize("prompt", ["", "Tell me about streams", "word " * 100])
def test_stream_yields_exactly_max_tokens_chunks(max_tokens, prompt):
    model = DemoChatModel(max_tokens=max_tokens, tokens_per_second=0)
    got = chunks(model, prompt)
    assert len(got) == max_tokens
    assert all(isinstance(c.content, str) and c.content.strip() for c in got)
    last = final(model, prompt)
    assert last.usage_metadata["output_tokens"] == max_tokens
    assert last.usage_metadata["total_tokens"] == last.usage_metadata["input_tokens"] + max_tokens
    assert last.response_metadata["finish_reason"] == "length"
    assert got[-1].content == last.content  # usage rides on the last token, not a separate one


def test_text_reads_as_words_separated_by_single_spaces():
    text = text_of(DemoChatModel(max_tokens=120, tokens_per_second=0), "hello there")
    assert text.startswith("You asked: hello there")
    assert "  " not in text and not text.startswith(" ")
    assert len(text.split(" ")) == 120


def test_same_prompt_gives_same_text_and_different_prompts_differ():
    model = DemoChatModel(max_tokens=40, tokens_per_second=0)
    assert text_of(model, "alpha beta") == text_of(model, "alpha beta")
    assert text_of(model, "alpha beta") != text_of(model, "gamma delta")


def test_input_tokens_count_the_prompt_words():
    model = DemoChatModel(max_tokens=3, tokens_per_second=0)
    assert final(model, "one two three four").usage_metadata["input_tokens"] == 4


def test_stop_sequence_inside_a_token_truncates_there():
    model = DemoChatModel(max_tokens=50, tokens_per_second=0)
    full = text_of(model, "")
    assert "ravel" in full
    text = text_of(model, "", stop=["ravel"])
    assert text == full[: full.index("ravel")] == "Tokens t"
    last = final(model, "", stop=["ravel"])
    assert last.response_metadata["finish_reason"] == "stop"
    assert last.usage_metadata["output_tokens"] == len(chunks(model, "", stop=["ravel"]))


def test_earliest_of_several_stop_sequences_wins():
    model = DemoChatModel(max_tokens=50, tokens_per_second=0)
    full = text_of(model, "")
    text = text_of(model, "", stop=["Redis", "worker", "never-occurs"])
    assert text == full[: full.index("worker")]


def test_stop_sequence_that_never_occurs_changes_nothing():
    model = DemoChatModel(max_tokens=20, tokens_per_second=0)
    assert text_of(model, "hi", stop=["zzz"]) == text_of(model, "hi")
    assert final(model, "hi", stop=["zzz"]).response_metadata["finish_reason"] == "length"


@pytest.mark.parametrize("stop", ["s t", "travel from"])
def test_stop_sequence_spanning_tokens_is_cut_where_it_starts(stop):
    # A stop sequence that starts in an earlier token than the one completing it cuts where it starts.
    model = DemoChatModel(max_tokens=50, tokens_per_second=0)
    full = text_of(model, "")
    text = text_of(model, "", stop=[stop])
    assert stop not in text
    assert text == full[: full.index(stop)]


def test_astream_yields_the_same_text_as_stream():
    model = DemoChatModel(max_tokens=25, tokens_per_second=0)

    async def collect():
        return [c.content async for c in model.astream("same prompt") if c.content]

    assert asyncio.run(collect()) == [c.content for c in chunks(model, "same prompt")]


def test_invoke_returns_the_whole_text():
    model = DemoChatModel(max_tokens=15, tokens_per_second=0)
    assert model.invoke("x y").content == text_of(model, "x y")


def test_unpaced_model_is_fast():
    model = DemoChatModel(max_tokens=2000, tokens_per_second=0)
    started = time.monotonic()
    assert len(chunks(model, "fast")) == 2000
    assert time.monotonic() - started < 5.0


def test_pacing_sets_a_lower_bound_on_duration():
    model = DemoChatModel(max_tokens=20, tokens_per_second=100)
    started = time.monotonic()
    assert len(chunks(model, "slow")) == 20
    assert time.monotonic() - started >= 0.19


def test_async_pacing_sets_a_lower_bound_on_duration():
    model = DemoChatModel(max_tokens=20, tokens_per_second=100)

    async def run():
        started = asyncio.get_running_loop().time()
        count = len([c async for c in model.astream("slow") if c.content])
        return count, asyncio.get_running_loop().time() - started

    count, elapsed = asyncio.run(run())
    assert count == 20 and elapsed >= 0.19


def test_start_delay_holds_back_the_first_token_and_keeps_the_pace_after_it():
    model = DemoChatModel(max_tokens=5, tokens_per_second=100, start_delay_s=0.2)

    async def run():
        loop = asyncio.get_running_loop()
        started, arrivals = loop.time(), []
        async for chunk in model.astream("late"):
            if chunk.content:
                arrivals.append(loop.time() - started)
        return arrivals

    arrivals = asyncio.run(run())
    assert len(arrivals) == 5 and arrivals[0] >= 0.2
    assert arrivals[-1] >= 0.2 + 0.05  # the pace counts from the end of the delay


def test_start_delay_is_a_demo_param_bounded_by_the_schema():
    from pydantic import ValidationError

    from api.schemas import GenerationParams as RequestParams
    from tokenrelay.engine.models import GenerationParams

    assert GenerationParams.from_dict({"start_delay_s": 1.5}, 10).start_delay_s == 1.5
    assert GenerationParams.from_dict({}, 10).start_delay_s == 0.0
    with pytest.raises(ValidationError):
        RequestParams(start_delay_s=61)
    with pytest.raises(ValidationError):
        RequestParams(start_delay_s=-1)
