"""The Vercel AI SDK (the real `ai` npm package, in Node) against the real stack: `DefaultChatTransport`
sends and reconnects, `readUIMessageStream` assembles the message. `make test` installs the package
(`npm ci` in tests/js)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import uuid

import httpx
import pytest

from tokenrelay.engine.demo import demo_tokens

from ..support.http import assert_error
from ..support.processes import ROOT, Stack

JS_DIR = ROOT / "tests" / "js"
PROMPT = "how does resume work"


def expected(count: int) -> str:
    return "".join(demo_tokens(PROMPT, count))


def run_sdk(gateway_url: str, **options) -> dict:
    assert shutil.which("node"), "node is needed for the AI SDK tests"
    assert (JS_DIR / "node_modules" / "ai").is_dir(), "the `ai` package is not installed: run `make test` (npm ci)"
    options = {"api": f"{gateway_url}/ai-sdk/chat", "chatId": uuid.uuid4().hex[:16], "prompt": PROMPT, **options}
    done = subprocess.run(["node", "ai_sdk_client.mjs", json.dumps(options)], cwd=JS_DIR, capture_output=True,
                          text=True, timeout=60)
    assert done.stdout, done.stderr
    return {"chatId": options["chatId"], **json.loads(done.stdout)}


def body(max_tokens: int, tokens_per_second: float) -> dict:
    return {"model": "demo", "max_tokens": max_tokens, "tokens_per_second": tokens_per_second}


def test_send_messages_streams_the_whole_message(gateway_url):
    result = run_sdk(gateway_url, body=body(30, 300))
    assert result["text"] == expected(30)
    types = result["types"]
    assert types[:3] == ["start", "start-step", "text-start"] and types[-3:] == ["text-end", "finish-step", "finish"]
    assert set(types[3:-3]) == {"text-delta"}
    assert result["chunks"][-1]["finishReason"] == "length"
    job_id = result["id"].removeprefix("msg_")  # the message id names the job
    job = httpx.get(f"{gateway_url}/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded" and job["output"]["text"] == result["text"]
    assert job["metadata"] == {"api": "ai-sdk", "chat_id": result["chatId"]}


def test_dropped_and_reconnected_read_gives_the_same_text(gateway_url):
    uninterrupted = run_sdk(gateway_url, body=body(60, 40))
    dropped = run_sdk(gateway_url, mode="drop", dropAfter=3, body=body(60, 40))
    partial, resumed = dropped["partial"], dropped["resumed"]
    assert partial["types"].count("text-delta") == 3 and "finish" not in partial["types"]
    assert expected(60).startswith(partial["text"]) and len(partial["text"]) < len(expected(60))
    assert resumed["text"] == uninterrupted["text"] == expected(60)
    assert resumed["id"] == partial["id"]  # the same assistant message, rebuilt from its start
    assert resumed["types"].count("text-start") == 1 and resumed["types"][-1] == "finish"


def test_reconnect_replays_the_chats_last_message_or_says_there_is_none(gateway_url):
    finished = run_sdk(gateway_url, body=body(8, 0))
    again = run_sdk(gateway_url, mode="reconnect", chatId=finished["chatId"])
    assert again["text"] == finished["text"] == expected(8) and again["id"] == finished["id"]
    assert run_sdk(gateway_url, mode="reconnect")["stream"] is None  # 204: nothing to resume
    assert httpx.get(f"{gateway_url}/ai-sdk/chat/never-used/stream").status_code == 204


def test_a_failed_job_reaches_the_sdk_as_its_error(gateway_url):
    result = run_sdk(gateway_url, body={"model": "openai:error-401"})
    assert "the model provider returned an error" in json.dumps(result)
    assert "sk-provider-secret" not in json.dumps(result)


@pytest.mark.parametrize(("payload", "param"), [
    ({"id": "c1", "messages": []}, "messages"),
    ({"id": "c1", "messages": [{"role": "assistant", "parts": [{"type": "text", "text": "hi"}]}]}, "messages"),
    ({"id": "c/1", "messages": [{"role": "user", "parts": [{"type": "text", "text": "hi"}]}]}, "id"),
    ({"id": "c1", "model": "nope", "messages": [{"role": "user", "parts": [{"type": "text", "text": "hi"}]}]}, "model"),
    ({"id": "c1", "max_tokens": 10**9, "messages": [{"role": "user", "parts": [{"type": "text", "text": "hi"}]}]},
     "max_tokens"),
])
def test_bad_chat_requests_are_400(gateway_url, payload, param):
    assert_error(httpx.post(f"{gateway_url}/ai-sdk/chat", json=payload), 400, param=param)


def test_extra_fields_and_parts_the_sdk_adds_are_ignored(gateway_url):
    payload = {"id": "chat-extra", "trigger": "submit-message", "messageId": None, "somethingNew": 1,
               "model": "demo", "max_tokens": 3, "tokens_per_second": 0,
               "messages": [{"id": "a", "role": "user", "metadata": {}, "parts": [
                   {"type": "step-start"}, {"type": "text", "text": PROMPT, "state": "done"}]}]}
    with httpx.stream("POST", f"{gateway_url}/ai-sdk/chat", json=payload, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
        text = response.read().decode()
    assert text.endswith("data: [DONE]\n\n")
    deltas = [json.loads(line[6:])["delta"] for line in text.split("\n\n")
              if line.startswith("data: {") and '"text-delta"' in line]
    assert "".join(deltas) == expected(3)


def test_a_lost_worker_mid_message_sends_no_text_twice(redis_server, isolated_settings):
    payload = {"id": "lost-worker", **body(40, 20),
               "messages": [{"role": "user", "parts": [{"type": "text", "text": PROMPT}]}]}
    with Stack(redis_server.url, isolated_settings, workers=1) as stack:
        chunks = []
        with httpx.stream("POST", f"{stack.url}/ai-sdk/chat", json=payload, timeout=60) as response:
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    chunks.append(json.loads(line[6:]))
                    if [c["type"] for c in chunks].count("text-delta") == 6 and len(stack.workers) == 1:
                        stack.workers[0].signal(signal.SIGKILL)
                        stack.add_worker()
        assert "".join(c["delta"] for c in chunks if c["type"] == "text-delta") == expected(40)
        assert chunks[-1] == {"type": "finish", "finishReason": "length"}
        job_id = response.headers["x-tokenrelay-job-id"]
        assert httpx.get(f"{stack.url}/v1/jobs/{job_id}").json()["attempt"] == 2
