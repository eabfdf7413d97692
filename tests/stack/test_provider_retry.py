"""Provider errors through the real ChatOpenAI client and a real worker: invisible retries before the first
token, `reset` and a complete retry after it, and non-retryable errors that end the job at once."""

from __future__ import annotations

from tokenrelay import Client

from ..support.fake_openai import SECRET_IN_ERRORS
from ..support.streams import token_indexes, tries_text


def _requests(openai_server, model: str) -> int:
    return sum(1 for request in openai_server.requests if request["model"] == model)


def test_a_drop_mid_stream_resets_and_the_retry_is_complete(client: Client, openai_server):
    job = client.submit("a b c d e f g", model="openai:flaky-3")
    events = list(client.stream(job["id"]))
    kinds = [e.event for e in events]
    assert kinds.count("reset") == 1 and kinds[-1] == "end" and events[-1].data["status"] == "succeeded"
    assert events[kinds.index("reset")].data == {"attempt": 1, "reason": "provider_retry"}
    assert tries_text(events) == ["Echo: a b", "Echo: a b c d e f g"]
    after_reset = events[kinds.index("reset"):]
    assert token_indexes(after_reset) == list(range(8))  # the retry counts tokens from 0 again
    record = client.get(job["id"])
    assert record["output"]["text"] == "Echo: a b c d e f g" and record["usage"]["output_tokens"] == 8
    assert record["attempt"] == 1  # provider retries stay inside one job attempt


def test_an_error_before_the_first_token_is_retried_invisibly(client: Client, openai_server):
    job = client.submit("hidden retry", model="openai:unavailable-once")
    events = list(client.stream(job["id"]))
    assert [e.event for e in events if e.event != "token"] == ["metadata", "end"]
    assert "".join(e.data["text"] for e in events if e.event == "token") == "Echo: hidden retry"
    assert events[-1].data["status"] == "succeeded"
    assert _requests(openai_server, "unavailable-once") == 2


def test_a_server_error_every_time_fails_after_the_configured_attempts(client: Client, openai_server):
    before = _requests(openai_server, "error-500")
    job = client.submit("always failing", model="openai:error-500")
    events = list(client.stream(job["id"]))
    assert [e.event for e in events] == ["metadata", "error", "end"]
    assert events[1].data == {"type": "provider_error", "message": "the model provider returned an error"}
    assert events[2].data["status"] == "failed"
    assert _requests(openai_server, "error-500") - before == 3
    assert SECRET_IN_ERRORS not in repr(events)


def test_a_non_retryable_error_is_not_retried(client: Client, openai_server):
    before = _requests(openai_server, "error-401")
    job = client.submit("bad key", model="openai:error-401")
    events = list(client.stream(job["id"]))
    assert [e.event for e in events] == ["metadata", "error", "end"]
    assert _requests(openai_server, "error-401") - before == 1
