"""OpenAI's Responses API through the official `openai` SDK (sync and async) against the real stack:
background mode, dropped and resumed streams, cancel, delete, previous_response_id, refused fields."""

from __future__ import annotations

import asyncio
import json
import signal

import httpx
import openai
import pytest

from tokenrelay.engine.demo import demo_tokens

from ..support.http import assert_error
from ..support.processes import Stack, wait_until

PROMPT = "explain resumable streams"
DEFAULT_TOKENS = 64  # the demo model's own length when no max_output_tokens is given


def expected(count: int, prompt: str = PROMPT) -> str:
    return "".join(demo_tokens(prompt, count))


@pytest.fixture
def sdk(gateway_url):
    with openai.OpenAI(base_url=f"{gateway_url}/v1", api_key="unused", max_retries=0) as client:
        yield client


def poll(sdk, response_id: str, until: set[str], timeout_s: float = 20):
    return wait_until(lambda: (r := sdk.responses.retrieve(response_id)).status in until and r,
                      timeout_s=timeout_s, interval_s=0.05, message=f"response {response_id} {until}")


def assert_numbered(events, first: int = 0) -> None:
    assert [e.sequence_number for e in events] == list(range(first, first + len(events)))


def test_background_create_then_poll_to_completed(sdk, gateway_url):
    raw = sdk.responses.with_raw_response.create(model="demo", input=PROMPT, background=True,
                                                 instructions="be brief", metadata={"ticket": "42"},
                                                 extra_body={"tokens_per_second": 400})
    created = raw.parse()
    job_id = raw.headers["x-tokenrelay-job-id"]
    assert created.id == f"resp_{job_id}" and created.status == "queued" and created.background
    assert created.output == [] and created.instructions == "be brief"
    done = poll(sdk, created.id, {"completed"})
    assert done.output_text == expected(DEFAULT_TOKENS)
    assert done.output[0].role == "assistant" and done.output[0].status == "completed"
    assert done.usage.output_tokens == DEFAULT_TOKENS and done.metadata == {"ticket": "42"}
    job = httpx.get(f"{gateway_url}/v1/jobs/{job_id}").json()  # the same run, as a tokenrelay job
    assert job["status"] == "succeeded" and job["output"]["text"] == done.output_text


def test_stream_has_the_full_event_sequence(sdk):
    events = list(sdk.responses.create(model="demo", input=PROMPT, stream=True, max_output_tokens=12,
                                       extra_body={"tokens_per_second": 0}))
    assert_numbered(events)
    kinds = [e.type for e in events]
    assert kinds[:5] == ["response.created", "response.queued", "response.in_progress",
                         "response.output_item.added", "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.incomplete"]  # stopped by max_output_tokens, as OpenAI says it
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == expected(12) == events[-4].text
    final = events[-1].response
    assert final.status == "incomplete" and final.incomplete_details.reason == "max_output_tokens"
    assert final.output_text == expected(12) and final.usage.output_tokens == 12


def test_background_stream_dropped_and_resumed_with_starting_after(sdk):
    stream = sdk.responses.create(model="demo", input=PROMPT, background=True, stream=True, max_output_tokens=60,
                                  extra_body={"tokens_per_second": 60})
    first = []
    for event in stream:
        first.append(event)
        if sum(e.type == "response.output_text.delta" for e in first) == 4:
            break
    stream.close()  # the client drops; the job goes on
    response_id, cursor = first[0].response.id, first[-1].sequence_number
    rest = list(sdk.responses.retrieve(response_id, stream=True, starting_after=cursor))
    assert_numbered(first + rest)  # no gap, no duplicate
    text = "".join(e.delta for e in first + rest if e.type == "response.output_text.delta")
    assert text == expected(60) == sdk.responses.retrieve(response_id).output_text
    # The SDK's stream helper resumes the same way, from any point, after the response finished too.
    with sdk.responses.stream(response_id=response_id, starting_after=cursor + 3) as again:
        replay = list(again)
    assert [e.sequence_number for e in replay] == [e.sequence_number for e in rest[3:]]
    assert [e.type for e in replay] == [e.type for e in rest[3:]]


def test_async_sdk_background_resume_and_blocking_create(gateway_url):
    async def scenario():
        async with openai.AsyncOpenAI(base_url=f"{gateway_url}/v1", api_key="unused", max_retries=0) as client:
            created = await client.responses.create(model="demo", input=PROMPT, background=True,
                                                    max_output_tokens=30, extra_body={"tokens_per_second": 100})
            events = [e async for e in await client.responses.retrieve(created.id, stream=True, starting_after=5)]
            blocking = await client.responses.create(model="demo", input="short one", max_output_tokens=5,
                                                     extra_body={"tokens_per_second": 0})
            return created, events, blocking

    created, events, blocking = asyncio.run(scenario())
    assert events[0].sequence_number == 6 and events[-1].type == "response.incomplete"
    assert events[-1].response.output_text == expected(30)
    assert blocking.status == "incomplete" and blocking.output_text == expected(5, "short one")


def test_cancel_stops_a_background_response(sdk, gateway_url):
    created = sdk.responses.create(model="demo", input=PROMPT, background=True, max_output_tokens=3000,
                                   extra_body={"tokens_per_second": 50})
    events, cancelled = [], None
    for event in sdk.responses.retrieve(created.id, stream=True):
        events.append(event)
        if cancelled is None and sum(e.type == "response.output_text.delta" for e in events) == 3:
            cancelled = sdk.responses.cancel(created.id)
    assert cancelled.status == "cancelled"
    assert events[-1].type == "response.incomplete" and events[-1].response.status == "cancelled"
    streamed = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert 3 <= len(events) < 100 and expected(3000).startswith(streamed)
    assert events[-1].response.output_text == streamed
    job_id = created.id.removeprefix("resp_")
    assert httpx.get(f"{gateway_url}/v1/jobs/{job_id}").json()["status"] == "cancelled"
    with pytest.raises(openai.BadRequestError):  # a finished response cannot be cancelled
        sdk.responses.cancel(sdk.responses.create(model="demo", input="x", max_output_tokens=2).id)


def test_delete_then_not_found(sdk, gateway_url):
    created = sdk.responses.create(model="demo", input=PROMPT, max_output_tokens=4,
                                   extra_body={"tokens_per_second": 0})
    deleted = sdk.responses.delete(created.id)
    assert deleted is None  # the SDK returns nothing; the HTTP answer below is checked raw
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(created.id)
    assert httpx.get(f"{gateway_url}/v1/jobs/{created.id.removeprefix('resp_')}").status_code == 404
    response = httpx.delete(f"{gateway_url}/v1/responses/{created.id}")
    assert_error(response, 404, mentions="not found", param="response_id")


def test_previous_response_id_continues_the_conversation(sdk, openai_server):
    first = sdk.responses.create(model="openai:echo", input="one two", instructions="first rules")
    assert first.status == "completed" and first.output_text == "Echo: one two"
    second = sdk.responses.create(model="openai:echo", input=[{"role": "user", "content": "three"}],
                                  previous_response_id=first.id, instructions="second rules")
    assert second.output_text == "Echo: three" and second.previous_response_id == first.id
    sent = openai_server.requests[-1]["messages"]
    assert [(m["role"], m["content"]) for m in sent] == [
        ("system", "second rules"), ("user", "one two"), ("assistant", "Echo: one two"), ("user", "three")]
    items = sdk.responses.input_items.list(second.id)
    assert [(i.role, i.content[0].text) for i in items.data] == [("user", "three")]  # its own input only
    with pytest.raises(openai.NotFoundError):
        sdk.responses.create(model="demo", input="x", previous_response_id="resp_" + "0" * 32)


def test_input_items_list_in_both_orders(sdk):
    created = sdk.responses.create(model="demo", max_output_tokens=2, input=[
        {"role": "developer", "content": "rules"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello"}]}])
    newest_first = sdk.responses.input_items.list(created.id)
    assert [i.role for i in newest_first.data] == ["user", "developer"]
    oldest_first = sdk.responses.input_items.list(created.id, order="asc", limit=1)
    assert [i.content[0].text for i in oldest_first.data] == ["rules"] and oldest_first.has_more


@pytest.mark.parametrize(("extra", "named"), [
    ({"tools": [{"type": "web_search_preview"}]}, "tools[0]"),
    ({"reasoning": {"effort": "low"}}, "reasoning"),
    ({"text": {"format": {"type": "json_object"}}}, "text"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "http://x/y.png"}]}]},
     "input[0].content[0]"),
    ({"background": True, "store": False}, "store"),
])
def test_unsupported_fields_are_refused_by_name(gateway_url, extra, named):
    response = httpx.post(f"{gateway_url}/v1/responses", json={"model": "demo", "input": "hi", **extra})
    error = assert_error(response, 400, param=named)
    assert named.split("[")[0] in error["message"]
    assert httpx.get(f"{gateway_url}/v1/jobs").json()["data"] == []  # refused requests never became jobs


def test_sdk_errors(sdk):
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.responses.create(model="gpt-nope", input="x")
    assert caught.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.responses.create(model="demo", input="x", max_output_tokens=10**9)
    assert caught.value.param == "max_output_tokens"
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.responses.create(model="demo", input="x" * 200_001)  # over max_message_chars
    assert caught.value.param == "input"
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve("resp_nope")


def test_store_false_forgets_the_response(sdk):
    answer = sdk.responses.create(model="demo", input=PROMPT, max_output_tokens=3, store=False,
                                  extra_body={"tokens_per_second": 0})
    assert answer.output_text == expected(3)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(answer.id)


def test_lost_worker_mid_response_sends_no_text_twice(redis_server, isolated_settings):
    with Stack(redis_server.url, isolated_settings, workers=1) as stack:
        with openai.OpenAI(base_url=f"{stack.url}/v1", api_key="unused", max_retries=0) as sdk:
            events = []
            for event in sdk.responses.create(model="demo", input=PROMPT, background=True, stream=True,
                                              max_output_tokens=40, extra_body={"tokens_per_second": 20}):
                events.append(event)
                if sum(e.type == "response.output_text.delta" for e in events) == 6 and len(stack.workers) == 1:
                    stack.workers[0].signal(signal.SIGKILL)
                    stack.add_worker()
            assert_numbered(events)
            assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == expected(40)
            response_id = events[0].response.id
        # The same numbers after the fact, from another gateway, from the start and from the middle.
        with openai.OpenAI(base_url=f"{stack.add_gateway()}/v1", api_key="unused", max_retries=0) as other:
            replay = list(other.responses.retrieve(response_id, stream=True))
            tail = list(other.responses.retrieve(response_id, stream=True, starting_after=10))
        assert [(e.sequence_number, e.type) for e in replay] == [(e.sequence_number, e.type) for e in events]
        assert [(e.sequence_number, e.type) for e in tail] == [(e.sequence_number, e.type) for e in events[11:]]
        job = httpx.get(f"{stack.url}/v1/jobs/{response_id.removeprefix('resp_')}").json()
        assert job["attempt"] == 2


def test_raw_wire_format_and_job_id_on_every_answer(gateway_url):
    body = {"model": "demo", "input": PROMPT, "stream": True, "background": True, "max_output_tokens": 6,
            "tokens_per_second": 0, "user": "ignored"}
    with httpx.stream("POST", f"{gateway_url}/v1/responses", json=body, timeout=30) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        job_id = response.headers["x-tokenrelay-job-id"]
        raw = response.read().decode()
    frames = [frame.split("\n") for frame in raw.split("\n\n") if frame and not frame.startswith(":")]
    assert all(len(lines) == 2 and lines[0].startswith("event: ") and lines[1].startswith("data: ")
               for lines in frames)
    events = [json.loads(lines[1][6:]) for lines in frames]
    assert [e["type"] for e in events] == [lines[0][7:] for lines in frames]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    response_id = f"resp_{job_id}"
    assert events[0]["response"]["id"] == response_id and events[-1]["response"]["status"] == "incomplete"
    for method, path in [("GET", ""), ("GET", "?stream=true&starting_after=3"), ("GET", "/input_items"),
                         ("POST", "/cancel"), ("DELETE", "")]:
        answer = httpx.request(method, f"{gateway_url}/v1/responses/{response_id}{path}", timeout=30)
        assert answer.headers["x-tokenrelay-job-id"] == job_id, (method, path, answer.status_code)


def test_idempotency_key_makes_a_retried_create_return_the_same_response(sdk, gateway_url):
    key = {"Idempotency-Key": "create-once-1"}
    raw = sdk.responses.with_raw_response.create(model="demo", input=PROMPT, background=True, max_output_tokens=8,
                                                 extra_body={"tokens_per_second": 0}, extra_headers=key)
    first = raw.parse()
    again = sdk.responses.with_raw_response.create(model="demo", input=PROMPT, background=True, max_output_tokens=8,
                                                   extra_body={"tokens_per_second": 0}, extra_headers=key)
    assert again.parse().id == first.id and again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in raw.headers
    events = list(sdk.responses.create(model="demo", input=PROMPT, background=True, stream=True, max_output_tokens=8,
                                       extra_body={"tokens_per_second": 0}, extra_headers=key))
    assert events[0].response.id == first.id and events[-1].response.output_text == expected(8)  # the same run
    with pytest.raises(openai.APIStatusError) as caught:  # the same key with another body is refused
        sdk.responses.create(model="demo", input="something else", background=True, extra_headers=key)
    assert caught.value.status_code == 422
    assert len(httpx.get(f"{gateway_url}/v1/jobs").json()["data"]) == 1
