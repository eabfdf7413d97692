"""tokenrelay.core.protocol: ids, key names, and event encoding that no token text can break."""

from __future__ import annotations

import json

import pytest
from redis.crc import key_slot

from tokenrelay.core import protocol
from tokenrelay.core.keys import INDEX_BUCKETS, Keys, bucket_of
from tokenrelay.core.protocol import (MAX_NOTIFIED_CHARS, EventId, encode_fields, notification,
                                      notified_entries)
from tokenrelay.errors import InvalidEventId, InvalidJobId
from tokenrelay.sse import SSEParser

JOB_ID = "0123456789abcdef0123456789abcdef"


# -- event ids ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [("1-0", EventId(1, 0)), ("12-345", EventId(12, 345)), (" 1-2 ", EventId(1, 2)), ("3-4\n", EventId(3, 4)),
     ("0-0", EventId(0, 0)), (f"{10**19 - 1}-7", EventId(10**19 - 1, 7))],
)
def test_event_id_parse_accepts_attempt_dash_seq(text, expected):
    assert EventId.parse(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", " ", "abc", "1", "1-", "-1", "-1-2", "1--2", "1-2-3", "1.5-2", "1-2x", "0x1-2", "+1-2", "1 -2",
     f"{2**64}-0", f"0-{2**64}", f"{2**70}-1", "1" * 40 + "-1", None, 12],
)
def test_event_id_parse_rejects_malformed_or_out_of_range(text):
    with pytest.raises(InvalidEventId):
        EventId.parse(text)


def test_event_id_round_trips_through_str():
    for event_id in (EventId(1, 0), EventId(7, 123456)):
        assert EventId.parse(str(event_id)) == event_id
    assert str(EventId.parse("  12-345 ")) == "12-345"


def test_event_ids_order_by_attempt_then_seq():
    assert EventId(1, 9) < EventId(2, 0)
    assert EventId(2, 0) < EventId(2, 1)
    assert EventId(1, 10) > EventId(1, 9)  # numeric, not string, order
    ids = [EventId.parse(t) for t in ("2-0", "1-10", "1-9", "10-0", "1-0")]
    assert [str(i) for i in sorted(ids)] == ["1-0", "1-9", "1-10", "2-0", "10-0"]


# -- job ids and keys --------------------------------------------------------------------------


def test_new_job_ids_are_valid_and_distinct():
    ids = {protocol.new_job_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(protocol.check_job_id(job_id) == job_id for job_id in ids)


@pytest.mark.parametrize(
    "job_id",
    ["", "0123", JOB_ID[:-1], JOB_ID + "0", JOB_ID.upper(), "g" + JOB_ID[1:], JOB_ID[:8] + "-" + JOB_ID[9:],
     " " + JOB_ID[1:], "0123456789abcdef0123456789abcde}", "../" + JOB_ID[3:], None, 123],
)
def test_check_job_id_rejects_malformed(job_id):
    with pytest.raises(InvalidJobId):
        protocol.check_job_id(job_id)


def test_check_job_id_rejects_trailing_newline():
    # A regex `$` would also match before a final "\n" and let a newline into key names.
    with pytest.raises(InvalidJobId):
        protocol.check_job_id(JOB_ID + "\n")


def test_keys_share_the_job_hash_tag():
    keys = Keys("tr")
    assert keys.events(JOB_ID) == f"tr:{{{JOB_ID}}}:events"
    assert keys.meta(JOB_ID) == f"tr:{{{JOB_ID}}}:meta"
    assert keys.lease(JOB_ID) == f"tr:{{{JOB_ID}}}:lease"
    assert keys.live(JOB_ID) == f"tr:{{{JOB_ID}}}:live"
    assert (keys.workers, keys.cancel_channel) == ("tr:workers", "tr:cancel")


def test_indexes_are_buckets_spread_over_slots():
    keys = Keys("tr")
    assert len(set(keys.running_buckets)) == len(set(keys.recent_buckets)) == INDEX_BUCKETS
    assert len(set(keys.settling_buckets)) == INDEX_BUCKETS and keys.settling_buckets[3] == "tr:settling:03"
    assert keys.running_buckets[7] == "tr:running:07" and keys.recent_buckets[0] == "tr:recent:00"
    # A job's bucket comes from its id; ids spread over every bucket.
    assert keys.running(JOB_ID) == keys.running_buckets[bucket_of(JOB_ID)]
    assert keys.settling(JOB_ID) == keys.settling_buckets[bucket_of(JOB_ID)]
    assert {bucket_of(protocol.new_job_id()) for _ in range(2_000)} == set(range(INDEX_BUCKETS))
    # Buckets spread over the slots of a cluster's masters (3 masters: 5461 slots each).
    slots = {key_slot(key.encode()) // 5462 for key in keys.running_buckets + keys.recent_buckets + keys.settling_buckets}
    assert slots == {0, 1, 2}


@pytest.mark.parametrize("bad", ["", "x", JOB_ID.upper(), JOB_ID + "}:x:{" + JOB_ID, "*"])
def test_keys_reject_bad_job_ids(bad):
    keys = Keys("tr")
    with pytest.raises(InvalidJobId):
        keys.events(bad)
    with pytest.raises(InvalidJobId):
        keys.meta(bad)


# -- event encoding ----------------------------------------------------------------------------

HOSTILE_TEXTS = [
    "\n\nevent: end\ndata: x",
    "\r\n\r\nid: 9-9\r\nevent: end\r\ndata: {}\r\n\r\n",
    "a\rb",
    "data: {\"status\":\"succeeded\"}",
    ": comment\n\n",
    "id: 5-5\n",
    "\u2028\u2029\u0085 unicode line separators",
    "quotes \" and backslashes \\ and \x00\x1f controls",
    "ünïcødé ☃ 😀",
    "",
]


def parse_frames(frame: bytes):
    return list(SSEParser().feed(frame.decode()))


@pytest.mark.parametrize("text", HOSTILE_TEXTS)
def test_sse_frame_carries_any_token_text_as_exactly_one_event(text):
    data = {"text": text, "index": 3}
    frame = protocol.sse_frame("1-4", protocol.TOKEN, protocol.dumps(data))
    events = parse_frames(frame)
    assert len(events) == 1
    assert (events[0].id, events[0].event, events[0].data) == ("1-4", "token", data)


@pytest.mark.parametrize("text", HOSTILE_TEXTS)
def test_entry_to_sse_round_trips_stream_fields(text):
    data = {"text": text, "index": 0}
    fields = {k.encode(): v.encode() for k, v in protocol.encode_fields(protocol.TOKEN, data).items()}
    frame = protocol.entry_to_sse(b"2-17", fields)
    assert frame == protocol.sse_frame("2-17", protocol.TOKEN, protocol.dumps(data))
    events = parse_frames(frame)
    assert [(e.id, e.event, e.data) for e in events] == [("2-17", "token", data)]


def test_frames_concatenate_into_a_stream():
    frames = b"".join(
        [protocol.KEEPALIVE_FRAME]
        + [protocol.sse_frame(f"1-{i}", protocol.TOKEN, protocol.dumps({"text": t})) for i, t in enumerate(HOSTILE_TEXTS)]
        + [protocol.sse_frame("1-99", protocol.END, protocol.dumps({"status": "succeeded"}))]
    )
    events = parse_frames(frames)
    assert [e.data["text"] for e in events[:-1]] == HOSTILE_TEXTS
    assert [e.id for e in events] == [f"1-{i}" for i in range(len(HOSTILE_TEXTS))] + ["1-99"]
    assert events[-1].is_end and sum(e.is_end for e in events) == 1


def test_dumps_is_compact_and_keeps_unicode():
    assert protocol.dumps({"a": [1, 2], "t": "é\n"}) == '{"a":[1,2],"t":"é\\n"}'


def test_a_notification_carries_a_writes_entries_as_xrange_returns_them():
    entries = [("1-0", encode_fields("metadata", {"job_id": "x", "attempt": 1})),
               ("1-1", encode_fields("token", {"text": "a\x1e\x1f\n\"é\U0001F600", "index": 0, "count": 2}))]
    payload = notification(entries).encode()
    carried = notified_entries(payload)
    assert carried == [(entry_id.encode(), {b"e": f["e"].encode(), b"d": f["d"].encode()}) for entry_id, f in entries]
    assert json.loads(carried[1][1][b"d"])["text"] == "a\x1e\x1f\n\"é\U0001F600"  # control characters stay escaped


def test_a_write_too_big_to_carry_notifies_its_last_id_only():
    entries = [("2-7", encode_fields("value", {"state": "x" * MAX_NOTIFIED_CHARS}))]
    assert notification(entries) == "2-7"
    assert notified_entries(b"2-7") is None
