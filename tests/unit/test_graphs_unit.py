"""The pure parts of graph jobs, without Redis or HTTP: arithmetic, the demo's tool calls, graph events,
provider retries, reader filters, and the publisher's merge rule for graph tokens."""

from __future__ import annotations

import asyncio
import json
from typing import TypedDict

import httpx
import openai
import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langgraph.config import get_stream_writer
from langgraph.graph import START, StateGraph

from api.filters import EntryView, StreamFilter
from tokenrelay.core.settings import Settings
from tokenrelay.engine import graphs
from tokenrelay.engine.arithmetic import NotArithmetic, evaluate, find_expression
from tokenrelay.engine.demo import DemoChatModel
from tokenrelay.engine.examples.calculator_agent import calculator
from tokenrelay.engine.retry import RetryPolicy, is_retryable, with_retries
from tokenrelay.engine.runner import Outcome
from tokenrelay.events import Event
from tokenrelay.errors import InvalidRequest, UnknownGraph
from worker.publisher import _mergeable


@pytest.mark.parametrize("text, expression, value", [
    ("what is the square root of 71?", "sqrt(71)", 71 ** 0.5),
    ("compute 3 * (4 + 2) now", "3 * (4 + 2)", 18),
    ("2^10?", "2**10", 1024),
])
def test_find_and_evaluate_arithmetic(text, expression, value):
    assert find_expression(text) == expression
    assert evaluate(expression) == pytest.approx(value)


@pytest.mark.parametrize("bad", ["__import__('os')", "2 ** 100000", "1/0", "sqrt(-1)", "x + 1", "[1]"])
def test_evaluate_refuses_anything_but_arithmetic(bad):
    with pytest.raises(NotArithmetic):
        evaluate(bad)
    assert calculator.invoke({"expression": bad}).startswith("error: ")


def test_no_expression_in_plain_text():
    assert find_expression("tell me about the year 2024") is None


def test_demo_calls_a_bound_tool_for_arithmetic_then_states_the_result():
    model = DemoChatModel(max_tokens=20, tokens_per_second=0).bind_tools([calculator])
    call = model.invoke([HumanMessage("what is the square root of 71?")])
    assert call.content == "" and call.tool_calls[0]["name"] == "calculator"
    assert call.tool_calls[0]["args"] == {"expression": "sqrt(71)"}
    answer = model.invoke([HumanMessage("what is the square root of 71?"), call,
                           ToolMessage("8.426149773176359", tool_call_id=call.tool_calls[0]["id"])])
    assert answer.content == "The result is 8.426149773176359." and not answer.tool_calls
    # Without arithmetic, or without tools, it is the plain demo model.
    assert model.invoke([HumanMessage("hello")]).content.startswith("You asked: hello")
    assert DemoChatModel(max_tokens=3, tokens_per_second=0).invoke("what is 2 + 2").content == "You asked: what"


class _State(TypedDict, total=False):
    topic: str
    out: str


def _small_graph(model):
    async def call_model(state):
        get_stream_writer()({"stage": "start"})
        reply = await model.ainvoke([HumanMessage(state["topic"])], config={"tags": ["mine"]})
        return {"out": reply.text}

    return StateGraph(_State).add_node("call_model", call_model).add_edge(START, "call_model").compile()


def _run(graph, graph_input, modes):
    outcome = Outcome()

    async def collect():
        return [event async for event in graphs.stream_graph(graph, graph_input, modes, outcome)]

    return asyncio.run(collect()), outcome


def test_stream_graph_keeps_only_the_fields_clients_use():
    events, outcome = _run(_small_graph(DemoChatModel(max_tokens=4, tokens_per_second=0)), {"topic": "hi"},
                           ["messages", "custom", "updates", "values"])
    kinds = [e.event for e in events]
    assert kinds[0] == "value" and "custom" in kinds and kinds.count("token") == 4
    first = next(e for e in events if e.event == "token")
    assert set(first.data) == {"text", "index", "node", "tags", "run_id", "step", "model"}
    assert first.data["node"] == "call_model" and first.data["tags"] == ["mine"] and first.data["model"] == "demo"
    assert [e.data["index"] for e in events if e.event == "token"] == [0, 1, 2, 3]
    assert outcome.state == {"topic": "hi", "out": "You asked: hi Here"} and outcome.text == ""
    assert outcome.usage["output_tokens"] == 4
    # Only the modes asked for become events; the output is there all the same.
    events, outcome = _run(_small_graph(DemoChatModel(max_tokens=4, tokens_per_second=0)), {"topic": "hi"},
                           ["custom"])
    assert [e.event for e in events] == ["custom"] and outcome.state["out"] == "You asked: hi Here"


def test_unknown_graph_lists_the_registered_ones():
    with pytest.raises(UnknownGraph) as caught:
        graphs.check_graph("os:system", Settings())
    assert "calculator_agent, custom_progress, joke_poem" in caught.value.message


def test_state_becomes_plain_json():
    state = {"messages": [HumanMessage("q"), AIMessage("", tool_calls=[{"name": "c", "args": {"x": 1}, "id": "1"}])],
             "n": 3, "other": object()}
    doc = graphs.to_jsonable(state)
    json.dumps(doc)
    assert doc["messages"] == [{"role": "user", "content": "q"},
                               {"role": "assistant", "content": "", "tool_calls": [{"id": "1", "name": "c",
                                                                                    "args": {"x": 1}}]}]


def _failing_run(fail_times: int, exc: Exception, tokens_before_failure: int):
    calls = {"n": 0}

    def run():
        async def gen():
            calls["n"] += 1
            for index in range(tokens_before_failure):
                yield Event("token", {"text": f"t{index}", "index": index})
            if calls["n"] <= fail_times:
                raise exc
            yield Event("token", {"text": "done", "index": tokens_before_failure})
        return gen()

    return run, calls


def _collect(run, attempts=3):
    outcome = Outcome()

    async def go():
        return [e async for e in with_retries(run, outcome, RetryPolicy(attempts, (0.0,)), attempt=1)]

    return asyncio.run(go())


def _connection_error() -> Exception:
    return openai.APIConnectionError(request=httpx.Request("POST", "http://x"))


def test_retry_before_any_event_is_invisible_and_after_events_sends_reset():
    run, calls = _failing_run(1, _connection_error(), 0)
    assert [e.event for e in _collect(run)] == ["token"] and calls["n"] == 2
    run, calls = _failing_run(1, _connection_error(), 2)
    events = _collect(run)
    assert [e.event for e in events] == ["token", "token", "reset", "token", "token", "token"]
    assert events[2].data == {"attempt": 1, "reason": "provider_retry"}


def test_retry_gives_up_after_the_attempts_and_never_retries_a_bad_request():
    run, calls = _failing_run(5, _connection_error(), 0)
    with pytest.raises(openai.APIConnectionError):
        _collect(run, attempts=3)
    assert calls["n"] == 3
    response = httpx.Response(401, request=httpx.Request("POST", "http://x"))
    auth = openai.AuthenticationError("no", response=response, body=None)
    run, calls = _failing_run(5, auth, 0)
    with pytest.raises(openai.AuthenticationError):
        _collect(run)
    assert calls["n"] == 1 and not is_retryable(auth) and not is_retryable(ValueError("ours"))


def _view(event: str, data: dict) -> EntryView:
    return EntryView(event.encode(), json.dumps(data).encode())


def test_filters_choose_a_view_and_always_pass_terminal_events():
    poem = _view("token", {"text": "a", "tags": ["poem"], "node": "call_model"})
    joke = _view("token", {"text": "b", "tags": ["joke"], "node": "call_model"})
    call = _view("tool_call", {"node": "call_model", "name": "calculator"})
    result = _view("tool_result", {"node": "tools"})
    terminal = [_view(kind, {}) for kind in ("reset", "error", "end")]
    by_tag = StreamFilter.from_query(tags="poem", node=None, events=None, final_only=False)
    assert by_tag.accepts(poem) and not by_tag.accepts(joke) and by_tag.accepts(call)
    by_node = StreamFilter.from_query(tags=None, node="tools", events=None, final_only=False)
    assert by_node.accepts(result) and not by_node.accepts(call) and not by_node.accepts(poem)
    by_event = StreamFilter.from_query(tags=None, node=None, events="tool_call", final_only=False)
    assert by_event.accepts(call) and not by_event.accepts(poem)
    final = StreamFilter.from_query(tags=None, node=None, events=None, final_only=True)
    assert final.accepts(poem) and not final.accepts(call) and not final.accepts(result)
    for stream_filter in (by_tag, by_node, by_event, final):
        assert all(stream_filter.accepts(view) for view in terminal)
    assert StreamFilter.from_query(tags="", node=None, events=None, final_only=False) is None
    with pytest.raises(InvalidRequest):
        StreamFilter.from_query(tags=None, node=None, events="token,nope", final_only=False)


def test_tokens_of_different_calls_are_never_merged():
    base = {"text": "a", "index": 0, "node": "call_model", "run_id": "r1", "step": 1, "model": "demo"}
    same = Event("token", {**base, "tags": ["poem"]})
    assert _mergeable(same, Event("token", {**base, "tags": ["poem"], "text": "b", "index": 1}))
    assert not _mergeable(same, Event("token", {**base, "tags": ["joke"]}))
    assert not _mergeable(same, Event("token", {**base, "tags": ["poem"], "run_id": "r2"}))
