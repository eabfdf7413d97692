"""The pure tool-calling parts: job messages to LangChain's, streamed call pieces to whole calls, the demo
model's documented tool behaviour, and RelayChatModel's side of the conversion (no servers)."""

from __future__ import annotations

import asyncio

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool

from tokenrelay._langchain_messages import Replay, job_tool_choice, to_job_messages
from tokenrelay.engine import runner, tools
from tokenrelay.engine.demo import DemoChatModel
from tokenrelay.errors import ClientError
from tokenrelay.sse import Event


@tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression."""
    return expression


@tool
def get_weather(city: str, days: int) -> str:
    """The weather of a city."""
    return city


def test_job_messages_become_langchain_messages():
    messages = tools.to_langchain_messages([
        {"role": "system", "content": "s"}, {"role": "user", "content": "u"},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "name": "f", "args": {"x": 1}}]},
        {"role": "tool", "content": "2", "tool_call_id": "c1", "name": "f"}])
    assert [type(m) for m in messages] == [SystemMessage, HumanMessage, AIMessage, ToolMessage]
    assert messages[2].tool_calls == [{"id": "c1", "name": "f", "args": {"x": 1}, "type": "tool_call"}]
    assert messages[3].tool_call_id == "c1" and messages[3].content == "2"
    with pytest.raises(ValueError):
        tools.to_langchain_messages([{"role": "wizard", "content": "x"}])


def test_collector_joins_pieces_and_closes_a_call_when_the_next_starts():
    collector = tools.ToolCallCollector()
    assert collector.feed([{"index": 0, "id": "a", "name": "f", "args": '{"x":'}]) == []
    assert collector.feed([{"index": 0, "args": " 1}"}]) == []
    done = collector.feed([{"index": 1, "id": "b", "name": "g", "args": "not json"}])
    assert done == [{"index": 0, "id": "a", "name": "f", "args": {"x": 1}}]
    # Invalid JSON is relayed as the model wrote it, never evaluated.
    assert collector.finish() == [{"index": 1, "id": "b", "name": "g", "args": "not json"}]


def test_collector_without_indexes_starts_a_call_at_each_id():
    collector = tools.ToolCallCollector()
    collector.feed([{"index": None, "id": "a", "name": "f", "args": ""}, {"index": None, "args": "{}"}])
    assert collector.feed([{"index": None, "id": "b", "name": "g", "args": "{}"}])[0]["args"] == {}
    collector.finish()
    assert [call["index"] for call in collector.completed] == [0, 1]


def _run(request: dict, messages: list[dict]):
    model = tools.bind_request(DemoChatModel(tokens_per_second=0, max_tokens=10), request)
    outcome = runner.Outcome()

    async def collect():
        return [e async for e in runner.stream_chat(model, tools.to_langchain_messages(messages), outcome)]

    return asyncio.run(collect()), outcome


def _tools(*functions) -> list[dict]:
    from langchain_core.utils.function_calling import convert_to_openai_tool

    return [convert_to_openai_tool(f) for f in functions]


@pytest.mark.parametrize("prompt, choice, expected", [
    ("what is 3 * (4 + 2)?", None, ("calculator", {"expression": "3 * (4 + 2)"})),
    ("the weather in Oslo for 3 days", None, ("get_weather", {"city": "the weather in Oslo for 3 days",
                                                             "days": 3})),
    ("hello", None, None),
    ("what is 3 * (4 + 2)?", "none", None),
    ("hello", "required", ("calculator", {"expression": "hello"})),
    ("hello", {"type": "function", "function": {"name": "get_weather"}}, ("get_weather", {"city": "hello",
                                                                                         "days": 0})),
])
def test_demo_calls_a_tool_when_asked(prompt, choice, expected):
    events, outcome = _run({"tools": _tools(calculator, get_weather), "tool_choice": choice},
                           [{"role": "user", "content": prompt}])
    calls = [(e.data["name"], e.data["args"]) for e in events if e.event == "tool_call"]
    assert calls == ([expected] if expected else [])
    assert outcome.finish_reason == ("tool_calls" if expected else "length")
    assert outcome.tool_calls == [e.data for e in events if e.event == "tool_call"]


def test_demo_states_the_tool_result():
    events, outcome = _run({"tools": _tools(calculator)}, [
        {"role": "user", "content": "what is 3 * (4 + 2)?"},
        {"role": "assistant", "tool_calls": [{"id": "c", "name": "calculator", "args": {"expression": "3*6"}}]},
        {"role": "tool", "tool_call_id": "c", "content": "18"}])
    assert outcome.text == "The result is 18." and outcome.tool_calls == []


def test_relay_messages_and_tool_choice():
    ai = AIMessage("", tool_calls=[{"id": "c", "name": "f", "args": {"x": 1}, "type": "tool_call"}])
    sent = to_job_messages([HumanMessage("q"), ai, ToolMessage("2", tool_call_id="c", name="f"), AIMessage("")])
    assert sent == [{"role": "user", "content": "q"},
                    {"role": "assistant", "content": "", "tool_calls": [{"id": "c", "name": "f", "args": {"x": 1}}]},
                    {"role": "tool", "content": "2", "tool_call_id": "c", "name": "f"}]
    assert [job_tool_choice(c) for c in ("any", True, "auto", "f", None)] == [
        "required", "required", "auto", {"type": "function", "function": {"name": "f"}}, None]


def test_replay_swallows_a_repeated_call_after_a_reset_and_refuses_a_different_one():
    call = {"index": 0, "id": "c", "name": "f", "args": {"x": 1}}
    replay = Replay("j", "demo")
    first = replay.feed(Event(id="1-1", event="tool_call", data=call))
    assert first.message.tool_call_chunks[0]["args"] == '{"x": 1}'
    replay.feed(Event(id="2-0", event="reset", data={"attempt": 2, "reason": "worker_lost"}))
    assert replay.feed(Event(id="2-1", event="tool_call", data=call)) is None
    replay.feed(Event(id="3-0", event="reset", data={"attempt": 3, "reason": "worker_lost"}))
    with pytest.raises(ClientError):
        replay.feed(Event(id="3-1", event="tool_call", data={**call, "args": {"x": 2}}))


def test_chat_completion_stream_sends_each_call_once_across_attempts():
    from api.answer import Answer
    from api.openai_compat import openai_tool_call

    call = {"index": 0, "id": "c", "name": "f", "args": {"x": 1}}
    answer = Answer()
    assert answer.add_call(call) is True
    answer.reset()
    assert answer.add_call(call) is False  # the new attempt repeats it: not sent again
    assert answer.add_call({**call, "index": 1, "id": "d"}) is True
    answer.reset()
    assert answer.add_call({**call, "args": {"x": 2}}) is None  # a contradiction ends the stream
    assert openai_tool_call({**call, "args": "not json"})["function"] == {"name": "f", "arguments": "not json"}
