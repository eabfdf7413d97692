"""Model jobs with tools on `/v1/jobs`: the model's calls stream as `tool_call` events and land in the
job's output; tool results go back as tool messages; bad tool input is a clear 400."""

from __future__ import annotations

import json

import pytest

from tokenrelay import Client

from ..support.http import assert_error, post
from ..support.settings import TEST_SETTINGS
from ..support.streams import text_of

CALCULATOR = {"type": "function", "function": {
    "name": "calculator", "description": "Evaluate an arithmetic expression.",
    "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}}}
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                          "required": ["city"]}}}
FAST = {"tokens_per_second": 0}


def _run(client: Client, **body):
    job = client.submit(**body)
    events = list(client.stream(job["id"]))
    return events, client.get(job["id"])


def test_a_tool_call_streams_as_an_event_and_is_the_jobs_output(client: Client):
    events, record = _run(client, messages=[{"role": "user", "content": "what is 3 * (4 + 2)?"}],
                          tools=[CALCULATOR], params=FAST)
    assert [e.event for e in events] == ["metadata", "tool_call", "end"]
    call = events[1].data
    assert call["name"] == "calculator" and call["args"] == {"expression": "3 * (4 + 2)"}
    assert call["index"] == 0 and call["id"].startswith("call_")
    assert events[-1].data["finish_reason"] == "tool_calls" and events[-1].data["status"] == "succeeded"
    assert record["output"]["tool_calls"] == [call] and record["output"]["text"] == ""
    assert record["finish_reason"] == "tool_calls"

    # The client runs the tool and sends its result back: the model states it.
    history = [{"role": "user", "content": "what is 3 * (4 + 2)?"},
               {"role": "assistant", "tool_calls": record["output"]["tool_calls"]},
               {"role": "tool", "tool_call_id": call["id"], "content": "18"}]
    events, record = _run(client, messages=history, tools=[CALCULATOR], params=FAST)
    assert text_of(events) == "The result is 18." and not [e for e in events if e.event == "tool_call"]
    assert record["output"]["tool_calls"] is None and events[-1].data["finish_reason"] == "stop"


@pytest.mark.parametrize("choice, expected", [
    ("none", None), ("required", "calculator"), ({"type": "function", "function": {"name": "get_weather"}},
                                                 "get_weather")])
def test_tool_choice_is_honoured(client: Client, choice, expected):
    events, record = _run(client, prompt="hello there", tools=[CALCULATOR, WEATHER], tool_choice=choice,
                          params={**FAST, "max_tokens": 3})
    calls = [e.data["name"] for e in events if e.event == "tool_call"]
    assert calls == ([expected] if expected else [])
    assert record["finish_reason"] == ("tool_calls" if expected else "length")


def test_openai_models_get_the_tools_natively(client: Client, openai_server):
    before = len(openai_server.requests)
    events, record = _run(client, model="openai:echo", prompt="what is the square root of 71?",
                          tools=[CALCULATOR], tool_choice="auto", parallel_tool_calls=False)
    calls = [e.data for e in events if e.event == "tool_call"]
    # The provider streamed the arguments in three pieces: one event carries the whole call.
    assert calls == [{"index": 0, "id": "call_fake_1", "name": "calculator", "args": {"expression": "sqrt(71)"}}]
    assert record["output"]["tool_calls"] == calls and record["finish_reason"] == "tool_calls"
    sent = openai_server.requests[before]
    assert sent["tools"] == [CALCULATOR] and sent["tool_choice"] == "auto" and sent["parallel_tool_calls"] is False

    history = [{"role": "user", "content": "what is the square root of 71?"},
               {"role": "assistant", "content": "", "tool_calls": calls},
               {"role": "tool", "tool_call_id": "call_fake_1", "content": "8.43"}]
    events, _ = _run(client, model="openai:echo", messages=history, tools=[CALCULATOR])
    assert text_of(events) == "The result is 8.43."
    sent = openai_server.requests[-1]["messages"]
    assert sent[1]["tool_calls"] == [{"type": "function", "id": "call_fake_1", "function": {
        "name": "calculator", "arguments": json.dumps({"expression": "sqrt(71)"})}}]
    assert sent[2] == {"role": "tool", "tool_call_id": "call_fake_1", "content": "8.43"}


def test_response_format_reaches_a_provider_that_honours_it(client: Client, openai_server):
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    response_format = {"type": "json_schema", "json_schema": {"name": "place", "schema": schema}}
    events, record = _run(client, model="openai:echo", prompt="Paris", response_format=response_format)
    assert json.loads(record["output"]["text"]) == {"city": "Paris"}
    assert openai_server.requests[-1]["response_format"]["json_schema"]["schema"] == schema


def _tool(name: str, size: int = 0) -> dict:
    return {"type": "function", "function": {"name": name, "description": "x" * size}}


@pytest.mark.parametrize("extra, mentions, param", [
    ({"tool_choice": "required"}, "needs `tools`", "tool_choice"),
    ({"tools": [CALCULATOR], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "nope",
     "tool_choice"),
    ({"tools": [{"type": "web_search"}]}, "web_search", "tools.0"),
    ({"tools": [_tool("bad name!")]}, "tools.0.function.name", "tools.0.function.name"),
    ({"tools": [CALCULATOR, CALCULATOR]}, "unique", "tools"),
    ({"tools": [_tool(f"t{i}") for i in range(TEST_SETTINGS.get("max_tools", 128) + 1)]}, "max_tools", "tools"),
    ({"tools": [_tool("big", 20_000)]}, "max_tool_schema_bytes", "tools.0"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}},
     "cannot honour `response_format`", "response_format"),
    ({"response_format": {"type": "json_schema"}}, "json_schema", "response_format"),
    ({"messages": [{"role": "tool", "content": "18"}]}, "tool_call_id", "messages.0"),
    ({"messages": [{"role": "user", "content": "x", "tool_calls": []}]}, "only assistant", "messages.0"),
    ({"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "name": "f", "args": 7}]}]},
     "args", "messages.0.tool_calls.0.args"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]},
     "type `object`", "tools.0.function"),
])
def test_bad_tool_input_is_a_clear_400(gateway_url, extra, mentions, param):
    body = {"model": "demo", "prompt": "hi", **extra}
    if "messages" in extra:
        body.pop("prompt")
    assert_error(post(gateway_url, json=body), 400, mentions=mentions, param=param)


def test_a_graph_job_takes_no_tools(gateway_url):
    response = post(gateway_url, json={"graph": "calculator_agent", "input": {}, "tools": [CALCULATOR]})
    assert_error(response, 400, mentions="a graph job's tools are its graph's")


def test_arguments_that_are_not_json_go_back_as_the_model_wrote_them(client: Client, openai_server):
    history = [{"role": "user", "content": "what is the square root of 71?"},
               {"role": "assistant", "tool_calls": [{"id": "c9", "name": "calculator", "args": "sqrt(71"}]},
               {"role": "tool", "tool_call_id": "c9", "content": "error: not JSON"}]
    events, _ = _run(client, model="openai:echo", messages=history, tools=[CALCULATOR])
    assert text_of(events) == "The result is error: not JSON."
    sent = openai_server.requests[-1]["messages"][1]["tool_calls"][0]
    assert sent["id"] == "c9" and sent["function"]["arguments"] == "sqrt(71"


@pytest.mark.parametrize("fragment, param", [
    ('"tools": [{"type": "function", "function": {"name": "f", "description": "\\ud800"}}]', "tools.0.function"),
    ('"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "name": "f", "args": {"a": "\\ud800"}}]}]',
     "messages.0.tool_calls.0"),
])
def test_a_lone_surrogate_in_tool_json_is_a_400(gateway_url, fragment, param):
    body = '{"model": "demo", ' + fragment + (', "prompt": "x"}' if "tools" in fragment else "}")
    response = post(gateway_url, content=body.encode(), headers={"content-type": "application/json"})
    assert_error(response, 400, mentions="lone surrogate", param=param)


def test_a_call_cut_off_mid_arguments_is_retried_unseen(client: Client, openai_server):
    # The provider drops the connection after the first piece of the arguments: no reader sees half a
    # call; the retry's whole call is the only tool_call event, with no reset (nothing had gone out).
    events, record = _run(client, model="openai:flaky-1", prompt="what is the square root of 7?", tools=[CALCULATOR])
    assert [e.event for e in events] == ["metadata", "tool_call", "end"]
    assert events[1].data["args"] == {"expression": "sqrt(7)"} and record["status"] == "succeeded"
    assert len([r for r in openai_server.requests if r["model"] == "flaky-1"]) == 2
