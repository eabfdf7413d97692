"""`openai:<model>` jobs run through the real ChatOpenAI client against a local OpenAI-wire server."""

from __future__ import annotations

from tokenrelay import Client

from ..support.fake_openai import SECRET_IN_ERRORS
from ..support.streams import text_of, token_indexes, tries_text


def test_openai_model_streams_through_chat_openai(client: Client, openai_server):
    job = client.submit(messages=[{"role": "system", "content": "be nice"},
                                  {"role": "user", "content": "one two three four"}],
                        model="openai:echo", params={"max_tokens": 50, "temperature": 0.5})
    events = list(client.stream(job["id"]))
    assert events[-1].event == "end" and events[-1].data["status"] == "succeeded"
    assert text_of(events) == "Echo: one two three four"
    assert token_indexes(events)[-1] + 1 == events[-1].data["usage"]["output_tokens"] == 5
    assert events[-1].data["finish_reason"] == "stop"
    sent = [r for r in openai_server.requests if r["model"] == "echo"][-1]
    assert sent["stream"] is True and sent.get("max_completion_tokens", sent.get("max_tokens")) == 50 and sent["temperature"] == 0.5
    assert [m["role"] for m in sent["messages"]] == ["system", "user"]
    assert client.get(job["id"])["output"]["text"] == "Echo: one two three four"


def test_provider_error_is_sanitized(client: Client):
    job = client.submit("leak nothing", model="openai:error-401")
    events = list(client.stream(job["id"]))
    assert [e.event for e in events] == ["metadata", "error", "end"]
    assert events[1].data == {"type": "provider_error", "message": "the model provider returned an error"}
    assert events[2].data["status"] == "failed"
    record = client.get(job["id"])
    assert record["status"] == "failed" and record["error"]["type"] == "provider_error"
    assert SECRET_IN_ERRORS not in repr(events) and SECRET_IN_ERRORS not in repr(record)


def test_provider_dropping_mid_stream_every_time_fails_after_the_configured_attempts(client: Client):
    job = client.submit("a b c d e f g", model="openai:drop-after-3")
    events = list(client.stream(job["id"]))
    kinds = [e.event for e in events]
    assert kinds[-2:] == ["error", "end"] and events[-1].data["status"] == "failed"
    assert events[-2].data["type"] == "provider_unavailable"
    # Three tries (the test stack's provider_attempts): each one's partial text behind a reset.
    assert [e.data for e in events if e.event == "reset"] == [{"attempt": 1, "reason": "provider_retry"}] * 2
    assert tries_text(events) == ["Echo: a b"] * 3
    assert client.get(job["id"])["output"]["text"] == "Echo: a b"
