"""Reader-side filters of a job's stream: each reader picks its own view of one run.

Filters only drop events; ids stay those of the underlying stream, so Last-Event-ID resumes under
any filter. `reset`, `error` and `end` always pass: a reader must never miss being told to discard
output or that the run is over. An entry's JSON is parsed at most once, and only for filters that
look inside it (tags, node).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tokenrelay.core import protocol
from tokenrelay.core.registry import GRAPH_EVENT_TYPES, TOOL_CALL, TOOL_RESULT, UPDATE
from tokenrelay.errors import InvalidRequest

ALWAYS_PASS = frozenset({b"reset", b"error", b"end"})
KNOWN_EVENTS = (*protocol.EVENT_TYPES, *GRAPH_EVENT_TYPES)
FINAL_ONLY_EVENTS = frozenset({b"token", b"metadata"})
NODE_EVENTS = frozenset(name.encode() for name in (protocol.TOKEN, UPDATE, TOOL_CALL, TOOL_RESULT))
MAX_FILTER_VALUES = 32


class EntryView:
    """An entry's type and data, parsed on first use and shared by every filtered reader of a hub."""

    __slots__ = ("event", "raw", "_data")

    def __init__(self, event: bytes, raw: bytes) -> None:
        self.event = event
        self.raw = raw
        self._data: dict[str, Any] | None = None

    @property
    def data(self) -> dict[str, Any]:
        if self._data is None:
            try:
                self._data = json.loads(self.raw)
            except ValueError:
                self._data = {}
        return self._data


def _values(raw: str | None, param: str) -> frozenset[str] | None:
    if raw is None:
        return None
    values = frozenset(value.strip() for value in raw.split(",") if value.strip())
    if len(values) > MAX_FILTER_VALUES:
        raise InvalidRequest(f"at most {MAX_FILTER_VALUES} values in `{param}`", param=param)
    return values or None


def _needles(values: frozenset[str] | None) -> tuple[bytes, ...]:
    # How each value appears inside an entry's compact JSON (see protocol.dumps).
    return tuple(protocol.dumps(value).encode() for value in values or ())


@dataclass(frozen=True)
class StreamFilter:
    events: frozenset[bytes] | None = None
    tags: frozenset[str] | None = None
    nodes: frozenset[str] | None = None
    final_only: bool = False

    def __post_init__(self) -> None:
        # An entry whose bytes hold none of the wanted values cannot match: it is dropped unparsed.
        object.__setattr__(self, "_tag_needles", _needles(self.tags))
        object.__setattr__(self, "_node_needles", _needles(self.nodes))

    def _mentions(self, entry: EntryView, needles: tuple[bytes, ...]) -> bool:
        return any(needle in entry.raw for needle in needles)

    @classmethod
    def from_query(cls, *, tags: str | None, node: str | None, events: str | None,
                   final_only: bool) -> "StreamFilter | None":
        """A filter from query parameters, or None when the reader wants the whole stream."""
        event_names = _values(events, "events")
        unknown = sorted(event_names - set(KNOWN_EVENTS)) if event_names else []
        if unknown:
            raise InvalidRequest(f"unknown event type {unknown[0][:40]!r}; known: {', '.join(KNOWN_EVENTS)}",
                                 param="events")
        built = cls(frozenset(name.encode() for name in event_names) if event_names else None,
                    _values(tags, "tags"), _values(node, "node"), final_only)
        return None if built == cls() else built

    def accepts(self, entry: EntryView) -> bool:
        event = entry.event
        if event in ALWAYS_PASS:
            return True
        if self.events is not None and event not in self.events:
            return False
        if self.final_only and event not in FINAL_ONLY_EVENTS:
            return False
        if self.tags is not None and event == b"token" and (
                not self._mentions(entry, self._tag_needles) or self.tags.isdisjoint(entry.data.get("tags") or ())):
            return False
        if self.nodes is not None and event in NODE_EVENTS and (
                not self._mentions(entry, self._node_needles) or entry.data.get("node") not in self.nodes):
            return False
        return True
