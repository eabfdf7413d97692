"""A graph run whose worker is killed: a filtered reader is told to reset and gets the complete re-run."""

from __future__ import annotations

import signal

from tokenrelay import Client

from ..support.processes import Stack
from ..support.streams import text_of


def test_a_lost_worker_reruns_the_graph_and_a_filtered_reader_sees_reset_then_the_whole_poem(
        redis_server, isolated_settings):
    with Stack(redis_server.url, isolated_settings, workers=1) as stack, Client(stack.url) as client:
        job = client.submit_graph("joke_poem", {"topic": "loss"}, params={"max_tokens": 30, "tokens_per_second": 15})
        events, killed = [], False
        for event in client.stream(job["id"], filters={"tags": "poem"}):
            events.append(event)
            if not killed and sum(1 for e in events if e.event == "token") >= 3:
                stack.workers[0].signal(signal.SIGKILL)
                stack.add_worker()
                killed = True
        kinds = [e.event for e in events]
        assert kinds.count("reset") == 1 and kinds[-1] == "end" and events[-1].data["status"] == "succeeded"
        reset_at = kinds.index("reset")
        assert events[reset_at].data == {"attempt": 2, "reason": "worker_lost"}
        assert all("poem" in e.data["tags"] for e in events if e.event == "token")
        record = client.get(job["id"])
        assert record["attempt"] == 2
        assert text_of(events[reset_at:]) == record["output"]["state"]["poem"]
        assert text_of(events[:reset_at]) and record["output"]["state"]["poem"].startswith(text_of(events[:reset_at]))
