"""tokenrelay.events and tokenrelay.core.status: the one Event type, the events the product builds, and
the str enums whose values are the strings stored in Redis and sent in JSON."""

from __future__ import annotations

import json
from typing import get_args

import pytest

from api.schemas import JobView
from tokenrelay import Event as PublicEvent
from tokenrelay import events
from tokenrelay.core import protocol
from tokenrelay.core.status import (
    TERMINAL_STATUSES,
    CancelOutcome,
    FinishOutcome,
    JobStatus,
    StartOutcome,
)
from tokenrelay.events import Event
from tokenrelay.sse import SSEParser

ZERO_USAGE = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}


def test_job_statuses_are_the_api_statuses():
    assert [s.value for s in JobStatus] == ["queued", "running", "succeeded", "failed", "cancelled"]
    assert set(get_args(JobView.model_fields["status"].annotation)) == set(JobStatus)
    assert TERMINAL_STATUSES == {"succeeded", "failed", "cancelled"}
    assert [s for s in JobStatus if s.is_terminal] == ["succeeded", "failed", "cancelled"]


@pytest.mark.parametrize("enum", [JobStatus, StartOutcome, CancelOutcome, FinishOutcome])
def test_enum_members_are_their_strings_everywhere(enum):
    for member in enum:
        assert member == member.value and str(member) == member.value and f"{member}" == member.value
        assert json.dumps({"v": member}) == json.dumps({"v": member.value})
        assert enum(member.value) is member


def test_only_started_and_cancel_run_an_attempt():
    assert {outcome for outcome in StartOutcome if outcome.runs} == {StartOutcome.STARTED, StartOutcome.CANCEL}


def test_the_public_event_is_the_one_event_type():
    assert PublicEvent is Event
    from tokenrelay.sse import Event as ParserEvent
    assert ParserEvent is Event
    event = Event("end", {"status": "succeeded"}, "1-3")
    assert (event.id, event.event, event.data, event.is_end) == ("1-3", "end", {"status": "succeeded"}, True)
    assert Event("token", {"text": "a"}).id is None and not Event("token", {"text": "a"}).is_end


def test_end_without_usage_counts_zero_tokens_on_the_wire():
    # The exact bytes a cancelled queued job (store) and a lost job (gateway) write.
    assert protocol.dumps(events.end(JobStatus.CANCELLED).data) == (
        '{"status":"cancelled","usage":{"input_tokens":0,"output_tokens":0,"total_tokens":0},'
        '"finish_reason":"cancelled"}')
    assert events.end(JobStatus.FAILED).data == {"status": "failed", "usage": ZERO_USAGE, "finish_reason": "error"}


@pytest.mark.parametrize("status, given, expected", [
    ("succeeded", "length", "length"),
    ("succeeded", None, None),
    ("cancelled", "stop", "cancelled"),
    ("failed", "stop", "error"),
])
def test_end_finish_reason_says_why_a_job_did_not_succeed(status, given, expected):
    end = events.end(JobStatus(status), events.usage(3, 4), given)
    assert end.event == events.END and end.is_end
    assert end.data == {"status": status, "usage": {"input_tokens": 3, "output_tokens": 4, "total_tokens": 7},
                        "finish_reason": expected}


def test_metadata_reset_and_error_events():
    assert events.metadata("ab", 1, "demo").data == {"job_id": "ab", "attempt": 1, "model": "demo"}
    assert events.metadata("ab", 2, "demo", "poem").data == {"job_id": "ab", "attempt": 2, "model": "demo",
                                                              "graph": "poem"}
    assert events.reset(2, "worker_lost") == Event("reset", {"attempt": 2, "reason": "worker_lost"})
    for kind, message in events.ERROR_MESSAGES.items():
        assert events.error(kind) == Event("error", {"type": kind, "message": message})
    with pytest.raises(KeyError):
        events.error("no such error")


def test_a_built_event_reaches_a_client_as_the_same_event():
    built = [events.metadata("ab", 1, "demo"), Event(events.TOKEN, {"text": "hi", "index": 0}),
             events.error("timeout"), events.end(JobStatus.FAILED)]
    wire = b"".join(protocol.sse_frame(f"1-{seq}", e.event, protocol.dumps(e.data)) for seq, e in enumerate(built))
    received = list(SSEParser().feed(wire.decode()))
    assert received == [Event(e.event, e.data, f"1-{seq}") for seq, e in enumerate(built)]
    assert [e.is_end for e in received] == [False, False, False, True]
