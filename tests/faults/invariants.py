"""The invariant after every fault: each reader that kept reconnecting with Last-Event-ID holds every
token of the final attempt exactly once, in order, after at most one reset per new attempt, and
exactly one end."""

from __future__ import annotations

from tokenrelay.core.protocol import EventId


def check_reader(events, record: dict | None = None) -> dict:
    """Assert the invariant on one reader's events (all its connections, in order); return a summary."""
    kinds = [e.event for e in events]
    assert kinds.count("end") == 1 and kinds[-1] == "end", kinds[-5:]
    ids = [EventId.parse(e.id) for e in events]
    assert all(a < b for a, b in zip(ids, ids[1:])), "event ids must strictly increase: no duplicate, no reorder"
    resets = [e.data["attempt"] for e in events if e.event == "reset"]
    assert len(resets) == len(set(resets)) and all(attempt > 1 for attempt in resets), \
        "at most one reset per new attempt"
    metadata = [e for e in events if e.event == "metadata"]
    final_attempt = metadata[-1].data["attempt"] if metadata else ids[-1].attempt
    final = [e for e, event_id in zip(events, ids) if event_id.attempt == final_attempt]
    expected_index = 0
    for event in final:
        if event.event == "token":
            assert event.data["index"] == expected_index, "a token of the final attempt is missing or repeated"
            expected_index += event.data.get("count", 1)
    text = "".join(e.data["text"] for e in final if e.event == "token")
    end = events[-1].data
    if record is not None:
        assert end["status"] == record["status"]
        if record["status"] == "succeeded":
            assert text == record["output"]["text"]
            assert expected_index == end["usage"]["output_tokens"]
    return {"attempt": final_attempt, "tokens": expected_index, "status": end["status"], "text": text,
            "resets": kinds.count("reset"), "errors": [e.data for e in events if e.event == "error"]}
