"""The job-events -> Responses-events translation, without servers: numbering, batching, re-runs, endings."""

from __future__ import annotations

from api.responses.events import ResponseEvents

JOB = "a" * 32
DOC = {"created_at": 1, "store": True, "background": True}
USAGE = {"input_tokens": 2, "output_tokens": 3, "total_tokens": 5}


def run(entries, doc=DOC):
    translator = ResponseEvents(JOB, "demo", doc)
    events = translator.opening()
    for kind, data in entries:
        events += translator.feed(kind, data)
    return events


def deltas(events) -> str:
    return "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")


def meta(attempt: int = 1):
    return ("metadata", {"job_id": JOB, "attempt": attempt, "model": "demo"})


def token(text: str, index: int = 0, count: int = 1):
    return ("token", {"text": text, "index": index, **({"count": count} if count > 1 else {})})


def end(status: str = "succeeded", finish_reason: str = "stop"):
    return ("end", {"status": status, "usage": USAGE, "finish_reason": finish_reason})


def test_numbers_are_consecutive_and_a_batched_token_event_is_one_delta():
    events = run([meta(), token("You"), token(" asked: hi", 1, count=2), end()])
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events] == [
        "response.created", "response.queued", "response.in_progress", "response.output_item.added",
        "response.content_part.added", "response.output_text.delta", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.completed"]
    final = events[-1]["response"]
    assert final["status"] == "completed" and final["output"][0]["content"][0]["text"] == "You asked: hi"
    assert final["usage"]["total_tokens"] == 5 and final["id"] == f"resp_{JOB}"


def test_the_same_history_gives_the_same_events_whatever_the_reader():
    history = [meta(), token("a"), token("b", 1), ("reset", {"attempt": 2, "reason": "worker_lost"}), meta(2),
               token("a"), token("b", 1), token("c", 2), end()]
    assert run(history) == run(history)
    # A re-run adds no event for what the client already has; only what is new.
    events = run(history)
    assert deltas(events) == "abc"
    assert [e["delta"] for e in events if e["type"] == "response.output_text.delta"] == ["a", "b", "c"]


def test_a_rerun_with_different_text_fails_the_stream_instead_of_doubling_it():
    events = run([meta(), token("first"), ("reset", {"attempt": 2, "reason": "worker_lost"}), meta(2),
                  token("other"), token(" more", 1), end()])
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["error"]["code"] == "stream_reset"
    assert deltas(events) == "first"


def test_length_is_incomplete_only_when_the_client_set_max_output_tokens():
    limited = run([meta(), token("x"), end(finish_reason="length")], {**DOC, "max_output_tokens": 1})
    assert limited[-1]["type"] == "response.incomplete"
    assert limited[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    natural = run([meta(), token("x"), end(finish_reason="length")])
    assert natural[-1]["type"] == "response.completed"


def test_failed_and_cancelled_endings():
    failed = run([meta(), token("x"), ("error", {"type": "provider_error", "message": "the provider failed"}),
                  end("failed", "error")])
    assert failed[-1]["type"] == "response.failed"
    assert failed[-1]["response"]["error"] == {"code": "provider_error", "message": "the provider failed"}
    cancelled_while_queued = run([end("cancelled", "cancelled")])
    assert [e["type"] for e in cancelled_while_queued] == ["response.created", "response.queued",
                                                           "response.incomplete"]
    assert cancelled_while_queued[-1]["response"]["status"] == "cancelled"
    assert cancelled_while_queued[-1]["response"]["output"] == []


def test_nothing_after_the_end():
    translator = ResponseEvents(JOB, "demo", DOC)
    translator.opening()
    translator.feed(*end())
    assert translator.done and translator.feed(*token("late")) == []
