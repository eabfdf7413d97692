"""The job-events -> AI SDK UI message chunks translation, without servers."""

from __future__ import annotations

from api.ai_sdk.chunks import UIMessageChunks

JOB = "b" * 32
USAGE = {"input_tokens": 1, "output_tokens": 2, "total_tokens": 3}


def run(entries):
    translator = UIMessageChunks(JOB)
    chunks = translator.opening()
    for kind, data in entries:
        chunks += translator.feed(kind, data)
    return chunks


META = ("metadata", {"job_id": JOB, "attempt": 1, "model": "demo"})
RESET = ("reset", {"attempt": 2, "reason": "worker_lost"})


def token(text):
    return ("token", {"text": text, "index": 0})


def end(status="succeeded", finish_reason="stop"):
    return ("end", {"status": status, "usage": USAGE, "finish_reason": finish_reason})


def test_a_message_from_start_to_finish():
    chunks = run([META, token("Hi"), token(" there"), end(finish_reason="length")])
    assert chunks == [
        {"type": "start", "messageId": f"msg_{JOB}"}, {"type": "start-step"}, {"type": "text-start", "id": f"text_{JOB}"},
        {"type": "text-delta", "id": f"text_{JOB}", "delta": "Hi"},
        {"type": "text-delta", "id": f"text_{JOB}", "delta": " there"},
        {"type": "text-end", "id": f"text_{JOB}"}, {"type": "finish-step"}, {"type": "finish", "finishReason": "length"}]


def test_a_rerun_sends_only_new_text_or_an_error_when_it_disagrees():
    agreeing = run([META, token("a"), RESET, META, token("a"), token("b"), end()])
    assert [c["delta"] for c in agreeing if c["type"] == "text-delta"] == ["a", "b"]
    disagreeing = run([META, token("a"), RESET, META, token("z"), token("b"), end()])
    assert disagreeing[-1]["type"] == "error" and [c["type"] for c in disagreeing].count("text-delta") == 1


def test_failed_and_cancelled_endings():
    failed = run([META, ("error", {"type": "provider_error", "message": "the provider failed"}), end("failed")])
    assert failed[-1] == {"type": "error", "errorText": "the provider failed"}
    assert run([end("cancelled", "cancelled")]) == [{"type": "start", "messageId": f"msg_{JOB}"},
                                                    {"type": "abort", "reason": "cancelled"}]
