"""The stream a user sees, through a real worker process, Redis and a uvicorn gateway."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tokenrelay import AsyncClient, Client

from ..support.streams import signature, text_of, token_indexes


def test_tokens_arrive_in_order_exactly_once_and_before_the_job_ends(client: Client):
    job = client.submit("hello tokens", params={"max_tokens": 40, "tokens_per_second": 40})
    status_at_first_token = None
    events = []
    for event in client.stream(job["id"]):
        events.append(event)
        if event.event == "token" and status_at_first_token is None:
            status_at_first_token = client.get(job["id"])["status"]
    assert events[0].event == "metadata" and events[0].data == {"job_id": job["id"], "attempt": 1, "model": "demo"}
    assert events[-1].event == "end" and events[-1].data["status"] == "succeeded"
    assert [e.event for e in events].count("end") == 1
    assert status_at_first_token == "running"
    assert token_indexes(events) == list(range(40))
    ids = [e.id for e in events]
    assert len(ids) == len(set(ids))
    record = client.get(job["id"])
    assert record["status"] == "succeeded"
    assert record["output"]["text"] == text_of(events)
    assert record["usage"]["output_tokens"] == 40
    assert record["attempt"] == 1 and record["error"] is None
    assert record["started_at"] and record["finished_at"]


def test_submit_answers_at_once_with_id_location_and_stream_url(gateway_url: str):
    response = httpx.post(f"{gateway_url}/v1/jobs", json={
        "model": "demo", "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        "params": {"max_tokens": 5}, "metadata": {"user": "u1", "nested": {"a": [1, 2]}},
    })
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "queued" and body["model"] == "demo"
    assert response.headers["location"] == f"/v1/jobs/{body['id']}"
    assert body["stream_url"] == f"/v1/jobs/{body['id']}/stream"
    assert body["metadata"] == {"user": "u1", "nested": {"a": [1, 2]}}
    with Client(gateway_url) as client:
        list(client.stream(body["id"]))
        assert client.get(body["id"])["metadata"] == {"user": "u1", "nested": {"a": [1, 2]}}


def test_stream_response_headers(client: Client, gateway_url: str):
    job = client.submit("headers", params={"max_tokens": 3, "tokens_per_second": 0})
    with httpx.stream("GET", f"{gateway_url}/v1/jobs/{job['id']}/stream") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        body = response.read().decode()
    frames = [f for f in body.split("\n\n") if f.startswith("id:")]
    assert all(f.split("\n")[1].startswith("event: ") and f.split("\n")[2].startswith("data: {") for f in frames)


async def _read_all(gateway_url: str, job_id: str, last_event_id: str | None = None):
    async with AsyncClient(gateway_url) as client:
        return [event async for event in client.stream(job_id, last_event_id)]


def test_fifty_readers_and_late_joiners_see_the_identical_stream(client: Client, gateway_url: str):
    job = client.submit("fan out", params={"max_tokens": 60, "tokens_per_second": 60})

    async def scenario():
        early = [asyncio.create_task(_read_all(gateway_url, job["id"])) for _ in range(50)]
        await asyncio.sleep(0.4)  # mid-run
        late = asyncio.create_task(_read_all(gateway_url, job["id"]))
        return await asyncio.gather(*early), await late

    early, late = asyncio.run(scenario())
    after_end = list(client.stream(job["id"]))
    reference = signature(early[0])
    assert token_indexes(early[0]) == list(range(60))
    for events in early[1:]:
        assert signature(events) == reference
    assert signature(late) == reference
    assert signature(after_end) == reference


def test_resume_with_last_event_id_has_no_gap_and_no_duplicate(client: Client, gateway_url: str):
    job = client.submit("resume me", params={"max_tokens": 50, "tokens_per_second": 50})
    first = []
    with httpx.stream("GET", f"{gateway_url}/v1/jobs/{job['id']}/stream") as response:
        from tokenrelay.sse import SSEParser

        parser = SSEParser()
        for text in response.iter_text():
            first.extend(parser.feed(text))
            if sum(1 for e in first if e.event == "token") >= 10:
                break
    resumed = list(client.stream(job["id"], last_event_id=first[-1].id))
    whole = list(client.stream(job["id"]))
    assert signature(first + resumed) == signature(whole)
    assert token_indexes(first + resumed) == list(range(50))
    # The query parameter works the same way as the header.
    response = httpx.get(f"{gateway_url}/v1/jobs/{job['id']}/stream", params={"last_event_id": whole[-2].id})
    assert response.text.count("event: end") == 1 and response.text.count("id: ") == 1


@pytest.mark.parametrize("bad_id", ["abc", "1", "1-2-3", "-1-2", "99999999999999999999999-1"])
def test_malformed_last_event_id_is_a_400(client: Client, gateway_url: str, bad_id: str):
    job = client.submit("x", params={"max_tokens": 2, "tokens_per_second": 0})
    response = httpx.get(f"{gateway_url}/v1/jobs/{job['id']}/stream", headers={"Last-Event-ID": bad_id})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "last_event_id"


def test_unknown_last_event_id_is_a_400_not_a_silent_restart(client: Client, gateway_url: str):
    job = client.submit("x", params={"max_tokens": 2, "tokens_per_second": 0})
    list(client.stream(job["id"]))
    response = httpx.get(f"{gateway_url}/v1/jobs/{job['id']}/stream", headers={"Last-Event-ID": "7-123"})
    assert response.status_code == 400
    assert "names no event" in response.json()["error"]["message"]


def test_cancel_stops_generation_and_ends_the_stream_cancelled(client: Client):
    job = client.submit("slow", params={"max_tokens": 400, "tokens_per_second": 20})
    events = []
    cancelled_at = None
    for event in client.stream(job["id"]):
        events.append(event)
        if event.event == "token" and cancelled_at is None and token_indexes(events)[-1] >= 4:
            answer = client.cancel(job["id"])
            cancelled_at = time.monotonic()
            assert answer["cancelled"] is True
    ended_at = time.monotonic()
    assert events[-1].event == "end" and events[-1].data["status"] == "cancelled"
    assert ended_at - cancelled_at < 1.0
    produced = len(token_indexes(events))
    assert produced < 20  # at 20 tokens/s, 250 ms is ~5 tokens past the cancel
    record = client.get(job["id"])
    assert record["status"] == "cancelled"
    assert record["usage"]["output_tokens"] == produced
    again = client.cancel(job["id"])
    assert again["cancelled"] is False and again["status"] == "cancelled"


def test_cancelling_a_finished_job_is_a_no_op_that_says_so(client: Client, gateway_url: str):
    job = client.submit("quick", params={"max_tokens": 3, "tokens_per_second": 0})
    list(client.stream(job["id"]))
    response = httpx.post(f"{gateway_url}/v1/jobs/{job['id']}/cancel")
    assert response.status_code == 200
    assert response.json() == {"id": job["id"], "status": "succeeded", "cancelled": False,
                               "detail": "job already succeeded; nothing to do"}
    assert client.get(job["id"])["status"] == "succeeded"


def test_health_and_ready(gateway_url: str):
    assert httpx.get(f"{gateway_url}/health").json() == {"status": "ok"}
    ready = httpx.get(f"{gateway_url}/ready")
    assert ready.status_code == 200 and ready.json()["redis"] is True and ready.json()["workers"] >= 1


def test_a_hundred_concurrent_jobs_all_complete_with_every_token(gateway_url: str):
    async def scenario():
        async with AsyncClient(gateway_url, timeout_s=60) as client:
            jobs = await asyncio.gather(*(client.submit(f"job {i}", params={"max_tokens": 50, "tokens_per_second": 0})
                                          for i in range(100)))

            async def read(job):
                return [event async for event in client.stream(job["id"])]

            return await asyncio.gather(*(read(job) for job in jobs))

    for events in asyncio.run(scenario()):
        assert token_indexes(events) == list(range(50))
        assert events[-1].event == "end" and events[-1].data["status"] == "succeeded"


def test_submit_with_stream_true_answers_with_the_event_stream(gateway_url: str, client: Client):
    body = {"model": "demo", "prompt": "one round trip", "stream": True,
            "params": {"max_tokens": 12, "tokens_per_second": 0}}
    with httpx.stream("POST", f"{gateway_url}/v1/jobs", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        job_id = response.headers["x-tokenrelay-job-id"]
        assert response.headers["location"] == f"/v1/jobs/{job_id}"
        from tokenrelay.sse import SSEParser

        parser = SSEParser()
        events = [event for text in response.iter_text() for event in parser.feed(text)]
    assert events[0].event == "metadata" and events[-1].event == "end"
    assert token_indexes(events) == list(range(12))
    assert signature(list(client.stream(job_id))) == signature(events)
