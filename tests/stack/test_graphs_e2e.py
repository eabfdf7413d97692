"""Graph jobs through a real worker process, Redis and a uvicorn gateway: events, filters, resume, cancel."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time

import httpx

from tokenrelay import AsyncClient, Client

from ..support.streams import signature, text_of

SQRT_71 = str(math.sqrt(71))[:9]  # "8.4261497": a few decimals


def tokens(events, tag: str | None = None) -> list:
    return [e for e in events if e.event == "token" and (tag is None or tag in e.data["tags"])]


def test_joke_poem_tokens_carry_node_and_tag_and_the_poem_tokens_are_the_poem(client: Client):
    job = client.submit_graph("joke_poem", {"topic": "cats"}, params={"max_tokens": 20, "tokens_per_second": 200})
    assert job["graph"] == "joke_poem" and job["model"] == "demo"
    events = list(client.stream(job["id"]))
    assert events[0].event == "metadata" and events[0].data["graph"] == "joke_poem"
    assert events[-1].event == "end" and events[-1].data["status"] == "succeeded"
    for event in tokens(events):
        assert event.data["node"] == "call_model" and event.data["tags"] in (["joke"], ["poem"])
        assert event.data["model"] == "demo" and event.data["step"] == 1 and event.data["run_id"]
        assert set(event.data) <= {"text", "index", "count", "node", "tags", "run_id", "step", "model"}
    record = client.get(job["id"])
    state = record["output"]["state"]
    assert state["topic"] == "cats"
    assert text_of(tokens(events, "poem")) == state["poem"] and "poem about cats" in state["poem"]
    assert text_of(tokens(events, "joke")) == state["joke"] and "joke about cats" in state["joke"]
    assert len({e.data["run_id"] for e in tokens(events, "poem")}) == 1
    # A reader following only the poem gets exactly the poem, and the terminal event.
    poem_only = list(client.stream(job["id"], filters={"tags": ["poem"]}))
    assert {e.event for e in poem_only} == {"metadata", "token", "end"}
    assert text_of(poem_only) == state["poem"]
    assert record["usage"]["output_tokens"] == 40


def expected_view(events, keep) -> list:
    return [e for e in events if e.event in ("reset", "error", "end") or keep(e)]


async def _read_some_then_resume(url: str, job_id: str, filters: dict, count: int):
    async with AsyncClient(url) as client:
        first = []
        async with contextlib.aclosing(client.stream(job_id, filters=filters)) as stream:
            async for event in stream:
                first.append(event)
                if len(first) == count:
                    break  # the connection drops here, mid-run
        await asyncio.sleep(0.1)  # more events arrive meanwhile
        resumed = [event async for event in client.stream(job_id, first[-1].id, filters=filters)]
        return first, resumed


def test_two_readers_with_different_filters_each_resume_under_their_filter(client: Client, gateway_url: str):
    job = client.submit_graph("joke_poem", {"topic": "resume"}, params={"max_tokens": 30, "tokens_per_second": 40})
    poem_filter = {"tags": "poem"}
    joke_tokens_filter = {"events": "token,end", "tags": "joke", "node": "call_model"}

    async def scenario():
        return await asyncio.gather(_read_some_then_resume(gateway_url, job["id"], poem_filter, 5),
                                    _read_some_then_resume(gateway_url, job["id"], joke_tokens_filter, 4))

    (poem_first, poem_rest), (joke_first, joke_rest) = asyncio.run(scenario())
    whole = list(client.stream(job["id"]))
    assert whole[-1].data["status"] == "succeeded"
    assert poem_first[-1].event == "token" and joke_first[-1].event == "token"  # both stopped mid-run
    poem_view = expected_view(whole, lambda e: e.event != "token" or "poem" in e.data["tags"])
    joke_view = expected_view(whole, lambda e: e.event == "token" and "joke" in e.data["tags"])
    assert signature(poem_first + poem_rest) == signature(poem_view)
    assert signature(joke_first + joke_rest) == signature(joke_view)
    assert signature(list(client.stream(job["id"], filters=poem_filter))) == signature(poem_view)
    state = client.get(job["id"])["output"]["state"]
    assert text_of(poem_first + poem_rest) == state["poem"] and text_of(joke_first + joke_rest) == state["joke"]


def _agent_input(question: str = "what is the square root of 71?") -> dict:
    return {"messages": [{"role": "user", "content": question}]}


def test_calculator_agent_final_only_shows_just_the_answer(client: Client):
    job = client.submit_graph("calculator_agent", _agent_input(), params={"tokens_per_second": 0})
    final = list(client.stream(job["id"], filters={"final_only": True}))
    assert {e.event for e in final} == {"metadata", "token", "end"}
    answer = text_of(final)
    assert SQRT_71 in answer and answer == "The result is 8.426149773176359."
    whole = list(client.stream(job["id"]))
    kinds = [e.event for e in whole]
    call = whole[kinds.index("tool_call")]
    result = whole[kinds.index("tool_result")]
    assert call.data["name"] == "calculator" and call.data["args"] == {"expression": "sqrt(71)"}
    assert call.data["node"] == "call_model"
    assert result.data["id"] == call.data["id"] and result.data["content"] == "8.426149773176359"
    assert kinds.index("tool_call") < kinds.index("tool_result") < kinds.index("token")
    record = client.get(job["id"])
    assert record["output"]["text"] == answer
    assert [m["role"] for m in record["output"]["state"]["messages"]] == ["user", "assistant", "tool", "assistant"]


def test_calculator_agent_runs_on_chat_openai_with_streamed_tool_calls(client: Client, openai_server):
    before = len(openai_server.requests)
    job = client.submit_graph("calculator_agent", _agent_input(), model="openai:echo",
                              stream_mode=["messages", "updates"])
    whole = list(client.stream(job["id"]))
    assert whole[-1].data["status"] == "succeeded"
    calls = [e for e in whole if e.event == "tool_call"]
    assert [(c.data["name"], c.data["args"], c.data["id"]) for c in calls] == [
        ("calculator", {"expression": "sqrt(71)"}, "call_fake_1")]
    assert [e.data["content"] for e in whole if e.event == "tool_result"] == ["8.426149773176359"]
    assert [e.data["node"] for e in whole if e.event == "update"] == ["call_model", "tools", "call_model"]
    final = list(client.stream(job["id"], filters={"final_only": "true"}))
    assert text_of(final) == "The result is 8.426149773176359."
    assert all(e.data["model"] == "echo" for e in tokens(final))
    # Usage chunks of both model calls add up: 3+9 for the tool call, 3+4 for the answer.
    assert whole[-1].data["usage"] == {"input_tokens": 6, "output_tokens": 13, "total_tokens": 19}
    sent = openai_server.requests[before:]
    assert len(sent) == 2 and sent[0]["tools"][0]["function"]["name"] == "calculator"
    assert sent[1]["messages"][-1]["role"] == "tool" and sent[1]["messages"][-1]["content"] == "8.426149773176359"


def test_custom_updates_and_values_modes(client: Client):
    job = client.submit_graph("custom_progress", {"topic": "rivers", "steps": 2},
                              stream_mode=["custom", "updates", "values"],
                              params={"max_tokens": 6, "tokens_per_second": 0})
    events = list(client.stream(job["id"]))
    assert events[-1].data["status"] == "succeeded"
    custom = [e.data["data"] for e in events if e.event == "custom"]
    assert custom[:2] == [{"stage": "preparing", "step": 1, "of": 2}, {"stage": "preparing", "step": 2, "of": 2}]
    assert custom[-1] == {"stage": "done", "step": 2, "of": 2}
    streamed = "".join(item["token"] for item in custom if "token" in item)
    state = client.get(job["id"])["output"]["state"]
    assert streamed == state["text"] == "You asked: Write about rivers Here"
    assert [e.data for e in events if e.event == "update"] == [{"node": "generate", "data": {"text": streamed}}]
    assert [e.data["data"] for e in events if e.event == "value"][-1] == state
    assert not tokens(events)  # `messages` was not asked for


def _cancel_timing(gateway_url: str, job_id: str, cancel_when) -> tuple[list, float]:
    async def scenario():
        async with AsyncClient(gateway_url) as client:
            events, cancelled_at = [], None
            async for event in client.stream(job_id):
                events.append((time.monotonic(), event))
                if cancelled_at is None and cancel_when(event):
                    cancelled_at = time.monotonic()
                    await client.cancel(job_id)
            return events, cancelled_at

    events, cancelled_at = asyncio.run(scenario())
    end_at, end = events[-1]
    assert end.event == "end" and end.data["status"] == "cancelled"
    return [event for _, event in events], end_at - cancelled_at


def test_cancel_stops_a_graph_between_tokens_within_250_ms(client: Client, gateway_url: str):
    job = client.submit_graph("joke_poem", {"topic": "slow"}, params={"max_tokens": 200, "tokens_per_second": 5})
    events, took_s = _cancel_timing(gateway_url, job["id"], lambda e: e.event == "token")
    assert took_s < 0.25, took_s
    assert len(tokens(events)) <= 4  # two calls at 5 tokens/s: nothing more in 250 ms
    assert client.get(job["id"])["status"] == "cancelled"


def test_cancel_stops_a_graph_inside_a_node_within_250_ms(client: Client, gateway_url: str):
    # At 2 tokens/s each preparing step of custom_progress waits 2.5 s before the next.
    job = client.submit_graph("custom_progress", {"steps": 5}, stream_mode=["custom"],
                              params={"tokens_per_second": 2})
    events, took_s = _cancel_timing(gateway_url, job["id"], lambda e: e.event == "custom")
    assert took_s < 0.25, took_s
    assert [e.data["data"] for e in events if e.event == "custom"] == [{"stage": "preparing", "step": 1, "of": 5}]


def test_graph_job_errors_are_clear_400s(gateway_url: str):
    def post(body):
        return httpx.post(f"{gateway_url}/v1/jobs", json=body, timeout=10)

    unknown = post({"graph": "tokenrelay.engine.examples.joke_poem:build"})
    assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "graph"
    message = unknown.json()["error"]["message"]
    assert all(name in message for name in ("joke_poem", "custom_progress", "calculator_agent"))
    cases = [
        ({"graph": "joke_poem", "prompt": "x"}, "not `messages` or `prompt`"),
        ({"graph": "joke_poem", "stream_mode": ["tokens"]}, "stream_mode"),
        ({"graph": "joke_poem", "stream_mode": []}, "must not be empty"),
        ({"graph": "joke_poem", "input": [1, 2]}, "input"),
        ({"graph": "joke_poem", "model": "gpt-secret"}, "not available"),
        ({"model": "demo", "prompt": "x", "stream_mode": "messages"}, "need a `graph`"),
        ({"prompt": "x"}, "give `model`"),
    ]
    for body, mentions in cases:
        response = post(body)
        assert response.status_code == 400, (body, response.text)
        assert mentions in response.json()["error"]["message"], (body, response.text)
    job = post({"graph": "joke_poem", "params": {"max_tokens": 2, "tokens_per_second": 0}}).json()
    bad_filter = httpx.get(f"{gateway_url}/v1/jobs/{job['id']}/stream", params={"events": "token,bogus"})
    assert bad_filter.status_code == 400 and bad_filter.json()["error"]["param"] == "events"
    assert "bogus" in bad_filter.json()["error"]["message"]


def test_examples_run_on_chat_openai_and_its_sdk(client: Client):
    job = client.submit_graph("custom_progress", {"topic": "tides", "steps": 1}, model="openai:echo",
                              stream_mode=["custom"])
    events = list(client.stream(job["id"]))
    assert events[-1].data["status"] == "succeeded"
    streamed = "".join(e.data["data"]["token"] for e in events if e.event == "custom" and "token" in e.data["data"])
    assert streamed == "Echo: Write about tides" == client.get(job["id"])["output"]["state"]["text"]
    job = client.submit_graph("joke_poem", {"topic": "owls"}, model="openai:echo")
    events = list(client.stream(job["id"], filters={"tags": "poem"}))
    assert text_of(events) == "Echo: Write a four-line poem about owls."
    assert {e.data["model"] for e in tokens(events)} == {"echo"}
