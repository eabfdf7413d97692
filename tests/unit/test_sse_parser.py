"""tokenrelay.sse.SSEParser: incremental parsing, independent of how the text is chunked."""

from __future__ import annotations

import random

import pytest

from tokenrelay.events import Event
from tokenrelay.sse import SSEParser

STREAM = (
    ": keepalive\n\n"
    "id: 1-0\nevent: metadata\ndata: {\"job_id\":\"abc\",\"attempt\":1}\n\n"
    "id: 1-1\nevent: token\ndata: {\"text\":\"Hello\",\"index\":0}\n\n"
    ": keepalive\n\n"
    "id: 1-2\nevent: token\ndata: {\"text\":\" world\",\n"
    "data: \"index\":1}\n\n"
    "id: 1-3\nevent: end\ndata: {\"status\":\"succeeded\"}\n\n"
)
EXPECTED = [
    Event("metadata", {"job_id": "abc", "attempt": 1}, "1-0"),
    Event("token", {"text": "Hello", "index": 0}, "1-1"),
    Event("token", {"text": " world", "index": 1}, "1-2"),
    Event("end", {"status": "succeeded"}, "1-3"),
]


def parse(chunks) -> list[Event]:
    parser = SSEParser()
    return [event for chunk in chunks for event in parser.feed(chunk)]


def random_chunks(text: str, rng: random.Random) -> list[str]:
    cuts = sorted(rng.sample(range(1, len(text)), k=min(len(text) - 1, rng.randint(1, 30))))
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]


def test_whole_stream_gives_every_event_once():
    assert parse([STREAM]) == EXPECTED
    assert EXPECTED[-1].is_end and not EXPECTED[0].is_end


def test_one_character_at_a_time_gives_the_same_events():
    assert parse(list(STREAM)) == EXPECTED


@pytest.mark.parametrize("seed", range(20))
def test_arbitrary_chunk_boundaries_give_the_same_events(seed):
    assert parse(random_chunks(STREAM, random.Random(seed))) == EXPECTED


@pytest.mark.parametrize("newline", ["\n", "\r", "\r\n"])
def test_lf_cr_and_crlf_line_endings(newline):
    # A trailing comment line, so a final lone CR is followed by more input (see the next test).
    text = (STREAM + ": bye\n").replace("\n", newline)
    assert parse([text]) == EXPECTED
    assert parse(list(text)) == EXPECTED


def test_mixed_line_endings_with_crlf_split_across_chunks():
    # The CR of a CRLF ends one chunk and its LF starts the next: one line end, not two.
    chunks = ["id: 7-0\r", "\nevent: token\r", "\ndata: {\"text\":\"a\"}\r", "\n\r", "\n"]
    assert parse(chunks) == [Event("token", {"text": "a"}, "7-0")]
    chunks = ["data: 1\r", "\r", "data: 2\n", "\r\n", "data: 3\r\n\n"]
    assert parse(chunks) == [Event("message", 1), Event("message", 2), Event("message", 3)]


def test_event_ended_by_cr_is_yielded_without_waiting_for_more_input():
    # WHATWG: CR alone is a complete line end (an LF right after it is then skipped). The blank
    # line of this event has been seen, so the event must come out now, not when (or if) more
    # bytes arrive; at the end of a response it would otherwise be lost.
    parser = SSEParser()
    assert list(parser.feed("id: 1-0\revent: end\rdata: {}\r\r")) == [Event("end", {}, "1-0")]
    assert list(parser.feed("\ndata: 2\r\n\r\n")) == [Event("message", 2, "1-0")]


def test_event_is_yielded_as_soon_as_its_blank_line_arrives():
    parser = SSEParser()
    assert list(parser.feed("event: token\ndata: 1\n")) == []
    assert list(parser.feed("\n")) == [Event("token", 1)]


def test_comments_are_ignored():
    assert parse([": keepalive\n\n:another\n: data: 5\n\n"]) == []
    assert parse([": x\ndata: 5\n: y\n\n"]) == [Event("message", 5)]


def test_multi_line_data_is_joined_with_newlines():
    assert parse(['data: {"a":\ndata: [1,\ndata: 2]}\n\n']) == [Event("message", {"a": [1, 2]})]
    # Joined with "\n", not "": two numbers do not become 12 (the joined text is not one JSON value).
    with pytest.raises(ValueError):
        parse(["data: 1\ndata: 2\n\n"])


def test_single_space_after_colon_is_optional_and_only_one_is_removed():
    assert parse(['data:"x"\n\n']) == [Event("message", "x")]
    assert parse(['event:  token\ndata: 1\n\n']) == [Event(" token", 1)]


def test_id_persists_until_changed_and_event_type_does_not():
    text = "id: 1-0\nevent: token\ndata: 1\n\ndata: 2\n\nid: 1-5\ndata: 3\n\n"
    assert parse([text]) == [
        Event("token", 1, "1-0"),
        Event("message", 2, "1-0"),
        Event("message", 3, "1-5"),
    ]


def test_event_without_data_is_not_dispatched_and_does_not_leak_its_type():
    text = "id: 2-0\nevent: token\n\ndata: 9\n\n"
    # Nothing for the first block; the id is still recorded; the type is reset.
    assert parse([text]) == [Event("message", 9, "2-0")]


def test_incomplete_event_is_not_dispatched():
    assert parse(["id: 1-0\nevent: end\ndata: {}\n"]) == []
