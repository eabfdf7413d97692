"""The stream a user sees, through a real worker process, Redis and uvicorn gateway."""

from __future__ import annotations

import time

import httpx

from tokenrelay import Client


def tokens_of(events):
    return [e for e in events if e.event == "token"]


def test_tokens_arrive_in_order_exactly_once_and_before_the_job_ends(client: Client):
    job = client.submit("hello tokens", params={"max_tokens": 40, "tokens_per_second": 40})
    first_token_at = None
    events = []
    for event in client.stream(job["id"]):
        events.append(event)
        if event.event == "token" and first_token_at is None:
            first_token_at = time.monotonic()
            status_at_first_token = client.get(job["id"])["status"]
    assert events[0].event == "metadata" and events[0].data["attempt"] == 1
    assert events[-1].event == "end" and events[-1].data["status"] == "succeeded"
    assert status_at_first_token == "running"
    tokens = tokens_of(events)
    indexes = []
    for token in tokens:
        indexes.extend(range(token.data["index"], token.data["index"] + token.data.get("count", 1)))
    assert indexes == list(range(40))
    ids = [e.id for e in events]
    assert len(ids) == len(set(ids))
    record = client.get(job["id"])
    assert record["status"] == "succeeded"
    assert record["output"]["text"] == "".join(t.data["text"] for t in tokens)
    assert record["usage"]["output_tokens"] == 40
