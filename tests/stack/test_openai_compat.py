"""`/v1/chat/completions` and `/v1/models` through the official `openai` SDK and a raw HTTP client,
against the real stack (Valkey, a Celery worker process, a uvicorn gateway)."""

from __future__ import annotations

import asyncio
import json
import signal

import httpx
import openai
import pytest

from api.answer import Answer
from tokenrelay import Client
from tokenrelay.engine.demo import demo_tokens

from ..support.processes import Stack, wait_until
from ..support.settings import TEST_SETTINGS

PROMPT = "compare the streams"
MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": PROMPT}]


def expected(count: int) -> str:
    return "".join(demo_tokens(PROMPT, count))


@pytest.fixture
def sdk(gateway_url):
    with openai.OpenAI(base_url=f"{gateway_url}/v1", api_key="unused", max_retries=0) as client:
        yield client


def recent_job_ids(gateway_url: str) -> list[str]:
    return [job["id"] for job in httpx.get(f"{gateway_url}/v1/jobs").json()["data"]]


def test_sdk_completion_runs_as_a_job(sdk, gateway_url):
    raw = sdk.chat.completions.with_raw_response.create(model="demo", messages=MESSAGES, max_tokens=12,
                                                        extra_body={"tokens_per_second": 0})
    completion = raw.parse()
    job_id = raw.headers["x-tokenrelay-job-id"]
    assert completion.object == "chat.completion" and completion.id == f"chatcmpl-{job_id}"
    assert completion.model == "demo"
    choice = completion.choices[0]
    assert choice.message.role == "assistant" and choice.message.content == expected(12)
    assert choice.finish_reason == "length"
    assert completion.usage.completion_tokens == 12
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 12
    with Client(gateway_url) as client:
        record = client.get(job_id)
    assert record["status"] == "succeeded" and record["output"]["text"] == expected(12)
    assert record["metadata"] == {"api": "chat.completions"}


def test_sdk_stream_has_role_first_finish_last_then_usage(sdk):
    stream = sdk.chat.completions.create(model="demo", messages=MESSAGES, max_completion_tokens=20, stream=True,
                                         stream_options={"include_usage": True}, extra_body={"tokens_per_second": 200})
    chunks = list(stream)
    assert {c.object for c in chunks} == {"chat.completion.chunk"} and len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].choices[0].delta.content == ""
    body, last_choice, usage = chunks[1:-2], chunks[-2], chunks[-1]
    assert all(c.choices[0].finish_reason is None and c.usage is None for c in body)
    assert "".join(c.choices[0].delta.content for c in body) == expected(20)
    assert last_choice.choices[0].finish_reason == "length" and last_choice.choices[0].delta.content is None
    assert usage.choices == [] and usage.usage.completion_tokens == 20


def test_sdk_stream_without_usage_ends_on_finish_reason(sdk):
    chunks = list(sdk.chat.completions.create(model="demo", messages=MESSAGES, max_tokens=5, stream=True,
                                              stop=["answer"], extra_body={"tokens_per_second": 0}))
    assert chunks[-1].choices[0].finish_reason == "length"
    assert all(not hasattr(c, "usage") or c.usage is None for c in chunks)


def test_stop_sequence_reaches_the_model(sdk):
    completion = sdk.chat.completions.create(model="demo", messages=MESSAGES, max_tokens=30, stop=["Here"],
                                             extra_body={"tokens_per_second": 0})
    assert completion.choices[0].message.content == f"You asked: {PROMPT} "
    assert completion.choices[0].finish_reason == "stop"


def test_async_sdk_stream_and_completion(gateway_url):
    async def scenario():
        async with openai.AsyncOpenAI(base_url=f"{gateway_url}/v1", api_key="unused", max_retries=0) as client:
            stream = await client.chat.completions.create(model="demo", messages=MESSAGES, max_tokens=15, stream=True,
                                                          extra_body={"tokens_per_second": 300})
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            completion = await client.chat.completions.create(model="demo", messages=MESSAGES, max_tokens=7,
                                                              extra_body={"tokens_per_second": 0})
            return text, completion

    text, completion = asyncio.run(scenario())
    assert text == expected(15)
    assert completion.choices[0].message.content == expected(7)


def test_models_list_and_retrieve(sdk):
    models = sdk.models.list()
    assert [m.id for m in models.data] == TEST_SETTINGS["models"].split(",")
    assert {m.object for m in models.data} == {"model"}
    assert sdk.models.retrieve("openai:echo").owned_by == "openai"
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.models.retrieve("nope")
    assert caught.value.code == "model_not_found"


def test_openai_provider_model_through_the_compat_api(sdk):
    completion = sdk.chat.completions.create(model="openai:echo", messages=[{"role": "user", "content": "a b c"}])
    assert completion.choices[0].message.content == "Echo: a b c"
    assert completion.choices[0].finish_reason == "stop"


def test_sdk_raises_its_usual_errors(sdk, gateway_url):
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.chat.completions.create(model="gpt-nope", messages=MESSAGES)
    assert caught.value.code == "model_not_found" and "demo" in caught.value.message
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="demo", messages=[])
    assert caught.value.param == "messages"
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="demo", messages=MESSAGES, max_tokens=10**9)
    assert "max_tokens" in caught.value.message
    with pytest.raises(openai.BadRequestError):
        sdk.chat.completions.create(model="demo", messages=MESSAGES, n=2)
    with pytest.raises(openai.BadRequestError):
        sdk.chat.completions.create(model="demo", messages=[{"role": "user", "content": "hi"}], temperature=7)
    assert recent_job_ids(gateway_url) == []  # refused requests never became jobs


def test_failed_job_is_a_5xx_the_sdk_does_not_retry(gateway_url):
    with openai.OpenAI(base_url=f"{gateway_url}/v1", api_key="unused", max_retries=2) as sdk:
        with pytest.raises(openai.APIStatusError) as caught:
            sdk.chat.completions.create(model="openai:error-401", messages=MESSAGES)
        assert caught.value.status_code == 502
        assert caught.value.body["type"] == "provider_error"
        assert "sk-provider-secret" not in caught.value.message
        with pytest.raises(openai.APIError) as caught:
            list(sdk.chat.completions.create(model="openai:error-401", messages=MESSAGES, stream=True))
        assert "provider returned an error" in caught.value.message
    assert len(recent_job_ids(gateway_url)) == 2  # one job per call: no retries


def test_raw_wire_format(gateway_url):
    body = {"model": "demo", "messages": MESSAGES, "stream": True, "max_tokens": 40, "tokens_per_second": 40,
            "stream_options": {"include_usage": True}, "user": "ignored-field"}
    with httpx.stream("POST", f"{gateway_url}/v1/chat/completions", json=body, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        job_id = response.headers["x-tokenrelay-job-id"]
        raw = b""
        status_at_first_token = None
        for piece in response.iter_bytes():
            raw += piece
            if status_at_first_token is None and b'"content":"You"' in raw:
                status_at_first_token = httpx.get(f"{gateway_url}/v1/jobs/{job_id}").json()["status"]
    assert status_at_first_token == "running"  # tokens arrive while the job runs, not at its end
    text = raw.decode()
    assert text.endswith("\n\ndata: [DONE]\n\n")
    frames = text.split("\n\n")[:-1]
    assert all(frame.startswith("data: ") and "\n" not in frame for frame in frames)
    chunks = [json.loads(frame[6:]) for frame in frames[:-1]]
    for chunk in chunks:
        assert set(chunk) == {"id", "object", "created", "model", "system_fingerprint", "choices", "usage"}
        assert chunk["id"] == f"chatcmpl-{job_id}" and chunk["object"] == "chat.completion.chunk"
    assert chunks[0]["choices"] == [{"index": 0, "delta": {"role": "assistant", "content": "", "refusal": None},
                                     "logprobs": None, "finish_reason": None}]
    assert chunks[1]["choices"][0]["delta"] == {"content": "You"}
    assert chunks[-2]["choices"] == [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "length"}]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 40
    # The same output can be re-attached as a tokenrelay stream.
    with Client(gateway_url) as client:
        events = list(client.stream(job_id))
    assert "".join(e.data["text"] for e in events if e.event == "token") == expected(40)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1]) == expected(40)


def test_raw_errors_have_openai_shape(gateway_url):
    response = httpx.post(f"{gateway_url}/v1/chat/completions", content=b"{not json",
                          headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    response = httpx.post(f"{gateway_url}/v1/chat/completions", json={"model": "demo"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "messages"
    response = httpx.post(f"{gateway_url}/v1/chat/completions",
                          json={"model": "demo", "messages": [{"role": "tool", "content": "x"}]})
    assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"


def test_cancel_ends_the_chat_stream(sdk, gateway_url):
    stream = sdk.chat.completions.with_streaming_response.create(
        model="demo", messages=MESSAGES, max_tokens=500, stream=True, extra_body={"tokens_per_second": 50})
    with stream as response:
        job_id = response.headers["x-tokenrelay-job-id"]
        chunks = []
        for chunk in response.parse():
            chunks.append(chunk)
            if len(chunks) == 3:
                httpx.post(f"{gateway_url}/v1/jobs/{job_id}/cancel")
    assert chunks[-1].choices[0].finish_reason == "cancelled"
    assert 3 <= len(chunks) < 100
    wait_until(lambda: httpx.get(f"{gateway_url}/v1/jobs/{job_id}").json()["status"] == "cancelled")


def test_chat_stream_survives_a_lost_worker_without_repeating_text(redis_server, isolated_settings):
    """The worker dies mid-answer; the job restarts elsewhere and the SDK's stream carries on seamlessly."""
    with Stack(redis_server.url, isolated_settings, workers=1) as stack:
        with openai.OpenAI(base_url=f"{stack.url}/v1", api_key="unused", max_retries=0) as sdk:
            stream = sdk.chat.completions.create(model="demo", messages=MESSAGES, max_tokens=40, stream=True,
                                                 extra_body={"tokens_per_second": 20})
            parts = []
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    parts.append(chunk.choices[0].delta.content)
                    if len(parts) == 6:
                        stack.workers[0].signal(signal.SIGKILL)
                        stack.add_worker()
        assert "".join(parts) == expected(40)
        assert chunk.choices[0].finish_reason == "length"
        job_id = stream.response.headers["x-tokenrelay-job-id"]
        assert httpx.get(f"{stack.url}/v1/jobs/{job_id}").json()["attempt"] == 2


def test_restarted_attempt_sends_only_new_text_and_refuses_a_different_answer():
    answer = Answer()
    assert [answer.add(t) for t in ("You", " asked", " about")] == ["You", " asked", " about"]
    answer.reset()  # attempt 2 starts over
    assert [answer.add(t) for t in ("You", " asked", " about", " it")] == ["", "", "", " it"]
    answer.reset()
    assert answer.add("Something else") is None
