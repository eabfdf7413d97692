"""Idempotency-Key on submits: a repeat gets the same job (and its stream, from Last-Event-ID), another body
with the same key is a 422, and the Python client retries a lost answer without running the job twice."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tokenrelay import Client
from tokenrelay.sse import SSEParser

from ..support.http import assert_error
from ..support.streams import signature

JOB = {"model": "demo", "prompt": "once only", "params": {"max_tokens": 12, "tokens_per_second": 0}}


def post(url: str, body: dict, key: str | None, **headers: str) -> httpx.Response:
    if key is not None:
        headers["Idempotency-Key"] = key
    return httpx.post(f"{url}/v1/jobs", json=body, headers=headers, timeout=10)


def read_stream(url: str, body: dict, key: str, stop_after: int | None = None, **headers: str) -> list:
    parser, events = SSEParser(), []
    with httpx.stream("POST", f"{url}/v1/jobs", json={**body, "stream": True}, timeout=10,
                      headers={"Idempotency-Key": key, **headers}) as response:
        assert response.status_code == 200, response.read()
        for text in response.iter_text():
            for event in parser.feed(text):
                events.append(event)
                if event.is_end or (stop_after is not None and len(events) >= stop_after):
                    return events
    return events


def test_a_repeat_gets_the_same_job(gateway_url):
    first = post(gateway_url, JOB, "order-1")
    again = post(gateway_url, JOB, "order-1")
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    assert post(gateway_url, JOB, "order-2").json()["id"] != first.json()["id"]


def test_the_same_key_with_another_body_is_a_422(gateway_url):
    assert post(gateway_url, JOB, "order-3").status_code == 202
    other = {**JOB, "prompt": "something else"}
    error = assert_error(post(gateway_url, other, "order-3"), 422, mentions="different request body",
                         param="Idempotency-Key")
    assert error["code"] == "idempotency_key_reused"


@pytest.mark.parametrize("key", ["", "has space", "x" * 256, "é".encode()])
def test_a_malformed_key_is_a_400(gateway_url, key):
    assert_error(post(gateway_url, JOB, None, **{"Idempotency-Key": key}), 400, param="Idempotency-Key")


def test_concurrent_requests_with_one_key_make_one_job(gateway_url):
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda _: post(gateway_url, JOB, "order-race"), range(20)))
    ids = {answer.json()["id"] for answer in answers if answer.status_code == 202}
    assert len(ids) == 1
    assert all(answer.status_code in (202, 409) for answer in answers)
    for answer in answers:
        if answer.status_code == 409:
            assert answer.json()["error"]["code"] == "idempotency_key_in_use" and answer.headers["Retry-After"]


def test_a_repeated_streaming_submit_resumes_after_last_event_id(gateway_url):
    body = {**JOB, "params": {"max_tokens": 30, "tokens_per_second": 60}}
    cut = read_stream(gateway_url, body, "stream-1", stop_after=5)
    rest = read_stream(gateway_url, body, "stream-1", **{"Last-Event-ID": cut[-1].id})
    whole = read_stream(gateway_url, body, "stream-1")  # a repeat without Last-Event-ID: from the start
    assert whole[-1].event == "end" and whole[-1].data["status"] == "succeeded"
    assert signature(cut + rest) == signature(whole)


def test_chat_completions_repeat_the_same_completion(gateway_url):
    body = {"model": "demo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 6}
    headers = {"Idempotency-Key": "chat-1"}
    first = httpx.post(f"{gateway_url}/v1/chat/completions", json=body, headers=headers, timeout=30)
    again = httpx.post(f"{gateway_url}/v1/chat/completions", json=body, headers=headers, timeout=30)
    assert first.status_code == again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["choices"] == first.json()["choices"]
    assert again.headers["Idempotent-Replayed"] == "true"


class LoseFirstAnswer(httpx.BaseTransport):
    """The network between client and gateway: the first submit reaches the gateway, its answer is lost."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.keys: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.method == "POST" and request.url.path == "/v1/jobs":
            self.keys.append(request.headers["Idempotency-Key"])
            if len(self.keys) == 1:
                response.read()
                response.close()
                raise httpx.ReadError("connection lost before the answer", request=request)
        return response


def test_the_client_retries_a_lost_answer_with_the_same_key(gateway_url):
    transport = LoseFirstAnswer()
    with Client(gateway_url, transport=transport) as client:
        job = client.submit("retry me", params={"max_tokens": 4, "tokens_per_second": 0})
        events = list(client.stream(job["id"]))
        assert events[-1].data["status"] == "succeeded"
        listed = [j["id"] for j in client.list_jobs(limit=50)]
    assert len(transport.keys) == 2 and transport.keys[0] == transport.keys[1]
    assert listed == [job["id"]]  # one job, not two
