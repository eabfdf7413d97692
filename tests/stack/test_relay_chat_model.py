"""RelayChatModel: LangChain's chat model interface, served by a running tokenrelay stack."""

from __future__ import annotations

import asyncio

import pytest

from tokenrelay import Client, ClientError
from tokenrelay.engine.demo import demo_tokens
from tokenrelay.langchain import RelayChatModel

from ..support.processes import wait_until


def test_stream_yields_the_jobs_output_text(client: Client, gateway_url: str):
    model = RelayChatModel(base_url=gateway_url, model="demo", params={"max_tokens": 12, "tokens_per_second": 0})
    chunks = list(model.stream("hello relay"))
    text = "".join(chunk.content for chunk in chunks)
    assert text == "".join(demo_tokens("hello relay", 12))
    assert len([c for c in chunks if c.content]) > 1  # it streamed, not one blob
    job_id = chunks[0].id
    record = client.get(job_id)
    assert record["status"] == "succeeded" and record["output"]["text"] == text
    merged = sum(chunks[1:], chunks[0])
    assert merged.usage_metadata["output_tokens"] == 12 and merged.response_metadata["job_id"] == job_id


def test_invoke_astream_and_astream_events_through_chat_openai(gateway_url: str):
    model = RelayChatModel(base_url=gateway_url, model="openai:echo")
    assert model.invoke([("system", "be brief"), ("human", "one two three")]).content == "Echo: one two three"

    async def scenario():
        streamed = "".join([chunk.content async for chunk in model.astream("four five")])
        events = [event async for event in model.astream_events("six seven", version="v2")
                  if event["event"] == "on_chat_model_stream"]
        return streamed, "".join(event["data"]["chunk"].content for event in events)

    streamed, from_events = asyncio.run(scenario())
    assert streamed == "Echo: four five" and from_events == "Echo: six seven"


def test_a_failed_job_raises_with_the_safe_error(gateway_url: str):
    with pytest.raises(ClientError) as caught:
        RelayChatModel(base_url=gateway_url, model="openai:error-401").invoke("x")
    assert caught.value.error_type == "provider_error" and "sk-" not in str(caught.value)


def test_a_provider_retry_mid_stream_is_not_seen_twice(gateway_url: str):
    # The first try drops after 3 chunks; after the reset the same text comes again and is not repeated.
    chunks = list(RelayChatModel(base_url=gateway_url, model="openai:flaky-3").stream("p q r s"))
    assert "".join(chunk.content for chunk in chunks) == "Echo: p q r s"


def test_stopping_early_cancels_the_job(client: Client, gateway_url: str):
    model = RelayChatModel(base_url=gateway_url, params={"max_tokens": 500, "tokens_per_second": 20})
    stream = model.stream("long answer")
    first = next(stream)
    assert client.get(first.id)["status"] == "running"  # the message id is the job id
    stream.close()
    wait_until(lambda: client.get(first.id)["status"] == "cancelled", timeout_s=5, message="job cancelled")
    assert client.get(first.id)["usage"]["output_tokens"] < 500
