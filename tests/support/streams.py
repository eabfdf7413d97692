"""Reading a job's events the way the tests compare them: token text, indexes, whole signatures."""

from __future__ import annotations


def token_indexes(events) -> list[int]:
    indexes: list[int] = []
    for event in events:
        if event.event == "token":
            indexes.extend(range(event.data["index"], event.data["index"] + event.data.get("count", 1)))
    return indexes


def text_of(events) -> str:
    return "".join(e.data["text"] for e in events if e.event == "token")


def signature(events) -> list[tuple]:
    return [(e.id, e.event, repr(e.data)) for e in events]


def tries_text(events) -> list[str]:
    """The text of each try, split at `reset` events."""
    tries = [""]
    for event in events:
        if event.event == "reset":
            tries.append("")
        elif event.event == "token":
            tries[-1] += event.data["text"]
    return tries
