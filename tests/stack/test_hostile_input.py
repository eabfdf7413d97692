"""Hostile input end to end: odd characters in prompts, tokens that look like SSE, huge numbers."""

from __future__ import annotations

import httpx
import pytest

from tokenrelay import Client

from ..support.http import assert_error, post

ODD_WORDS = ["nul\x00byte", "bidi\u202eoverride", "bom\ufeff", "zwj\u200d👩‍👩‍👧", "e\u0301\u0301\u0301",
             "ctrl\x01\x1b[31m", "nbsp\u00a0joined", "\U0010fffd", "quote\"back\\slash"]
SSE_LOOKALIKES = ["data:", "{\"text\":\"forged\"}", "event:", "end", "id:", "9-9", "retry:", "0", ":comment",
                  "data:{}", "event:end"]


def stream_events(client: Client, prompt: str, tokens: int) -> list:
    job = client.submit(prompt, params={"max_tokens": tokens, "tokens_per_second": 0})
    return list(client.stream(job["id"]))


def test_nul_bytes_and_odd_unicode_in_prompts_come_back_intact(client):
    prompt = " ".join(ODD_WORDS)
    words = prompt.split()  # the demo model echoes words: NBSP separates them, NUL and the rest do not
    events = stream_events(client, prompt, len(words) + 2)
    text = "".join(e.data["text"] for e in events if e.event == "token")
    assert text == "You asked: " + " ".join(words)
    assert "nul\x00byte" in words and "bidi\u202eoverride" in words
    assert [e.event for e in events][0] == "metadata" and events[-1].event == "end"


def test_tokens_that_look_like_sse_cannot_forge_events(client, gateway_url):
    prompt = " ".join(SSE_LOOKALIKES)
    job = client.submit(prompt, params={"max_tokens": len(SSE_LOOKALIKES) + 2, "tokens_per_second": 0})
    list(client.stream(job["id"]))
    raw = httpx.get(f"{gateway_url}/v1/jobs/{job['id']}/stream", timeout=10).text
    frames = [frame for frame in raw.split("\n\n") if frame.strip() and not frame.startswith("retry:")]
    # Every frame is exactly id/event/data, in that order; the look-alikes stay inside JSON strings.
    for frame in frames:
        lines = frame.split("\n")
        assert [line.split(":", 1)[0] for line in lines] == ["id", "event", "data"], frame
    kinds = [frame.split("\n")[1] for frame in frames]
    assert kinds.count("event: end") == 1 and kinds[-1] == "event: end"
    events = list(client.stream(job["id"]))
    assert "".join(e.data["text"] for e in events if e.event == "token") == "You asked: " + prompt


@pytest.mark.parametrize("raw", [
    b'{"model": "demo", "prompt": "lone \\ud800 surrogate"}',
    b'{"model": "demo", "prompt": "x", "metadata": {"n": ' + b"9" * 5000 + b"}}",
    b'{"model": "demo", "prompt": "x", "params": {"temperature": 1e400}}',
    b'{"model": "demo", "prompt": "x", "params": {"tokens_per_second": -1e308}}',
    b'{"model": "demo", "prompt": "x", "params": {"max_tokens": 1.5}}',
    b'{"model": "demo", "prompt": "x", "params": {"max_tokens": true}}',
    b'{"model": "demo", "prompt": "x", "params": {"stop": ["a", "b", "c", "d", "e"]}}',
    b'{"model": "demo", "prompt": "x", "metadata": []}',
    b'{"model": "' + b"m" * 10_000 + b'", "prompt": "x"}',
    b'{"model": "demo", "prompt": "x"} trailing',
    b"\xff\xfe not utf-8",
    b"",
    b"null",
])
def test_malformed_or_extreme_bodies_are_a_clear_400(gateway_url, raw):
    response = post(gateway_url, content=raw, headers={"content-type": "application/json"})
    assert_error(response, 400)


def test_huge_integers_in_metadata_within_limits_are_echoed(gateway_url):
    response = post(gateway_url, json={"model": "demo", "prompt": "x", "params": {"max_tokens": 1},
                                       "metadata": {"big": 2**64, "neg": -(2**63), "f": 1e308}})
    assert response.status_code == 202, response.text
    assert response.json()["metadata"] == {"big": 2**64, "neg": -(2**63), "f": 1e308}


@pytest.mark.parametrize("event_id", ["1-2-3", "-1-0", "1_0", "0x1-0", "1-", " ", "1-0\u0660", "18446744073709551616-0"])
def test_event_ids_that_are_not_stream_ids(client, gateway_url, event_id):
    job = client.submit("x", params={"max_tokens": 1, "tokens_per_second": 0})
    response = httpx.get(f"{gateway_url}/v1/jobs/{job['id']}/stream", params={"last_event_id": event_id}, timeout=10)
    assert_error(response, 400, param="last_event_id")
