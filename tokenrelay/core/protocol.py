"""The stream protocol shared by workers and gateways: key names, job and event ids, event encoding.

Deliberate choices (read before changing):
- Entry ids are explicit, `<attempt>-<seq>`. A write retried after a timeout fails with
  "equal or smaller" instead of duplicating an event, and every entry of attempt 2 sorts
  after every entry of attempt 1, so two attempts can never interleave.
- An event is two stream fields: `e` (type) and `d` (compact JSON). Gateways turn an entry into
  SSE bytes once and send those bytes to every reader.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidEventId, InvalidJobId
from ..events import END, ERROR, EVENT_TYPES, METADATA, RESET, TOKEN  # noqa: F401 - the stream's event types

JOB_ID_PATTERN = re.compile(r"[0-9a-f]{32}")
EVENT_ID_PATTERN = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")
MAX_ID_PART = 2**64 - 1

CANCEL_CHANNEL_SUFFIX = "cancel"


def new_job_id() -> str:
    return uuid.uuid4().hex


def check_job_id(job_id: str) -> str:
    if not isinstance(job_id, str) or not JOB_ID_PATTERN.fullmatch(job_id):
        raise InvalidJobId(job_id)
    return job_id


@dataclass(frozen=True, order=True)
class EventId:
    attempt: int
    seq: int

    @classmethod
    def parse(cls, text: str) -> "EventId":
        match = EVENT_ID_PATTERN.fullmatch(text.strip()) if isinstance(text, str) else None
        if not match:
            raise InvalidEventId(text)
        attempt, seq = int(match.group(1)), int(match.group(2))
        if attempt > MAX_ID_PART or seq > MAX_ID_PART:
            raise InvalidEventId(text)
        return cls(attempt, seq)

    def __str__(self) -> str:
        return f"{self.attempt}-{self.seq}"


# One encoder for every call: json.dumps with options builds a new encoder each time (a few µs per token).
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def dumps(data: Any) -> str:
    return _encode(data)


def encode_fields(event: str, data: dict[str, Any]) -> dict[str, str]:
    """Stream entry fields for one event."""
    return {"e": event, "d": dumps(data)}


# A worker's write notifies its job's channel with the entries it wrote, `<id>\x1f<e>\x1f<d>` each, joined
# by \x1e, so gateways relay them without reading them back. No field holds a raw control character
# (ids and event names do not, compact JSON escapes them), so the separators cannot occur inside one.
# A bigger write notifies its last id only: gateways read it from the stream.
MAX_NOTIFIED_CHARS = 16_384


def notification(entries: list[tuple[str, dict[str, str]]]) -> str:
    """What a write of `entries` (ids and `encode_fields` fields, in order) publishes on its job's channel."""
    text = "\x1e".join(f"{entry_id}\x1f{fields['e']}\x1f{fields['d']}" for entry_id, fields in entries)
    return text if len(text) <= MAX_NOTIFIED_CHARS else entries[-1][0]


def notified_entries(payload: bytes) -> list[tuple[bytes, dict[bytes, bytes]]] | None:
    """The entries a notification carries, as XRANGE returns them; None if it names an id only."""
    if b"\x1f" not in payload:
        return None
    entries = []
    for part in payload.split(b"\x1e"):
        entry_id, event, data = part.split(b"\x1f", 2)
        entries.append((entry_id, {b"e": event, b"d": data}))
    return entries


def sse_frame(event_id: str, event: str, data_json: str) -> bytes:
    # data_json is compact JSON: it never holds a raw CR or LF, so a token cannot forge a frame.
    return f"id: {event_id}\nevent: {event}\ndata: {data_json}\n\n".encode()


def entry_to_sse(entry_id: bytes, fields: dict[bytes, bytes]) -> bytes:
    """SSE bytes for a raw stream entry (as read with decode_responses=False)."""
    return b"id: " + entry_id + b"\nevent: " + fields[b"e"] + b"\ndata: " + fields[b"d"] + b"\n\n"


KEEPALIVE_FRAME = b": keepalive\n\n"
