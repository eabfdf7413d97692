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


def call(index: int = 0, name: str = "calculator", args=None, call_id: str | None = None):
    return ("tool_call", {"index": index, "id": call_id or f"call_{index}", "name": name,
                          "args": {"expression": "3 * (4 + 2)"} if args is None else args})


def test_a_tool_call_is_a_function_call_item_with_its_argument_events():
    events = run([meta(), call(), end(finish_reason="tool_calls")])
    assert [e["type"] for e in events] == [
        "response.created", "response.queued", "response.in_progress", "response.output_item.added",
        "response.function_call_arguments.delta", "response.function_call_arguments.done",
        "response.output_item.done", "response.completed"]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    added, delta, done, item_done, completed = events[3:]
    item_id = f"fc_{JOB}_0"
    assert added["output_index"] == 0 and added["item"] == {
        "id": item_id, "type": "function_call", "status": "in_progress", "call_id": "call_0",
        "name": "calculator", "arguments": ""}
    arguments = '{"expression":"3 * (4 + 2)"}'
    assert (delta["item_id"], delta["output_index"], delta["delta"]) == (item_id, 0, arguments)
    assert (done["item_id"], done["arguments"], done["name"]) == (item_id, arguments, "calculator")
    assert item_done["item"] == {**added["item"], "status": "completed", "arguments": arguments}
    final = completed["response"]
    assert final["status"] == "completed" and final["output"] == [item_done["item"]]


def test_text_then_calls_closes_the_message_before_the_first_call():
    events = run([meta(), token("Let me compute."), call(0), call(1, "lookup", "not json"),
                  end(finish_reason="tool_calls")])
    kinds = [e["type"] for e in events]
    assert kinds.index("response.output_item.done") < kinds.index("response.function_call_arguments.delta")
    added = [e for e in events if e["type"] == "response.output_item.added"]
    assert [(e["output_index"], e["item"]["type"]) for e in added] == [
        (0, "message"), (1, "function_call"), (2, "function_call")]
    assert [e["arguments"] for e in events if e["type"] == "response.function_call_arguments.done"] == [
        '{"expression":"3 * (4 + 2)"}', "not json"]  # arguments that are not JSON are relayed as written
    output = events[-1]["response"]["output"]
    assert [item["type"] for item in output] == ["message", "function_call", "function_call"]
    assert output[0]["content"][0]["text"] == "Let me compute." and output[0]["status"] == "completed"


def test_a_rerun_repeating_its_calls_adds_nothing_and_one_with_other_calls_fails():
    again = [meta(), call(), ("reset", {"attempt": 2, "reason": "worker_lost"}), meta(2), call(),
             end(finish_reason="tool_calls")]
    events = run(again)
    assert sum(e["type"] == "response.output_item.added" for e in events) == 1
    assert events[-1]["type"] == "response.completed" and len(events[-1]["response"]["output"]) == 1
    other = run([meta(), call(), ("reset", {"attempt": 2, "reason": "worker_lost"}), meta(2),
                 call(args={"expression": "1"}), end(finish_reason="tool_calls")])
    assert other[-1]["type"] == "response.failed" and other[-1]["response"]["error"]["code"] == "stream_reset"


def test_an_empty_answer_is_still_one_empty_message():
    events = run([meta(), end()])
    final = events[-1]["response"]
    assert final["status"] == "completed" and final["output"][0]["content"][0]["text"] == ""
