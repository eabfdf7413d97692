"""Agents on the client, their model calls on the fleet: the official `openai` SDK's tool loop against
`/v1/chat/completions`, `ChatOpenAI.bind_tools` pointed at the gateway, and LangGraph's prebuilt ReAct
agent over `RelayChatModel`. The client runs the tool; tokenrelay only relays its calls."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from langgraph.prebuilt import create_react_agent

from tokenrelay.engine.arithmetic import evaluate, format_number
from tokenrelay.langchain import RelayChatModel

QUESTION = "what is 3 * (4 + 2)?"
CALCULATOR = {"type": "function", "function": {
    "name": "calculator", "description": "Evaluate an arithmetic expression.",
    "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}}}


@tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression."""
    return format_number(evaluate(expression))


@pytest.fixture
def sdk(gateway_url):
    with openai.OpenAI(base_url=f"{gateway_url}/v1", api_key="unused", max_retries=0) as client:
        yield client


def _run_tool(call) -> str:
    return format_number(evaluate(json.loads(call.function.arguments)["expression"]))


def test_openai_sdk_tool_loop(sdk):
    messages = [{"role": "user", "content": QUESTION}]
    first = sdk.chat.completions.create(model="demo", messages=messages, tools=[CALCULATOR],
                                        extra_body={"tokens_per_second": 0})
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "calculator"
    assert json.loads(call.function.arguments) == {"expression": "3 * (4 + 2)"}
    messages += [choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": _run_tool(call)}]
    second = sdk.chat.completions.create(model="demo", messages=messages, tools=[CALCULATOR],
                                         extra_body={"tokens_per_second": 0})
    assert second.choices[0].message.content == "The result is 18."
    assert second.choices[0].finish_reason == "stop" and second.choices[0].message.tool_calls is None


def test_openai_sdk_streamed_tool_loop(sdk):
    messages = [{"role": "user", "content": QUESTION}]
    stream = sdk.chat.completions.create(model="demo", messages=messages, tools=[CALCULATOR], stream=True,
                                         stream_options={"include_usage": True})
    calls: dict[int, dict] = {}
    finish_reasons = []
    for chunk in stream:
        for choice in chunk.choices:
            finish_reasons.append(choice.finish_reason)
            for delta in choice.delta.tool_calls or ():  # joined by index, as SDK users do
                call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                call["id"] += delta.id or ""
                call["name"] += delta.function.name or ""
                call["arguments"] += delta.function.arguments or ""
    assert finish_reasons[-1] == "tool_calls" and chunk.usage.total_tokens > 0
    assert list(calls) == [0] and calls[0]["name"] == "calculator"
    result = format_number(evaluate(json.loads(calls[0]["arguments"])["expression"]))
    messages += [{"role": "assistant", "tool_calls": [{"id": calls[0]["id"], "type": "function", "function": {
        "name": "calculator", "arguments": calls[0]["arguments"]}}]},
                 {"role": "tool", "tool_call_id": calls[0]["id"], "content": result}]
    stream = sdk.chat.completions.create(model="demo", messages=messages, tools=[CALCULATOR], stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "The result is 18."


def test_raw_stream_has_openai_tool_call_chunks(gateway_url):
    body = {"model": "demo", "messages": [{"role": "user", "content": QUESTION}], "tools": [CALCULATOR],
            "stream": True}
    with httpx.stream("POST", f"{gateway_url}/v1/chat/completions", json=body, timeout=10) as response:
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[len("data: "):]) for line in lines[:-1]]
    deltas = [chunk["choices"][0]["delta"] for chunk in chunks]
    assert deltas[0] == {"role": "assistant", "content": "", "refusal": None}
    [tool_delta] = [delta for delta in deltas if "tool_calls" in delta]
    assert tool_delta == {"tool_calls": [{"index": 0, "id": tool_delta["tool_calls"][0]["id"], "type": "function",
                                          "function": {"name": "calculator",
                                                       "arguments": '{"expression":"3 * (4 + 2)"}'}}]}
    assert deltas[-1] == {} and chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_chat_openai_bind_tools_against_the_gateway(gateway_url):
    llm = ChatOpenAI(base_url=f"{gateway_url}/v1", api_key="unused", model="demo", max_retries=0)
    bound = llm.bind_tools([calculator])
    message = bound.invoke(QUESTION)
    assert [(c["name"], c["args"]) for c in message.tool_calls] == [("calculator", {"expression": "3 * (4 + 2)"})]
    streamed = None
    for chunk in bound.stream(QUESTION):
        streamed = chunk if streamed is None else streamed + chunk
    assert streamed.tool_calls == message.tool_calls
    answer = bound.invoke([HumanMessage(QUESTION), message, calculator.invoke(message.tool_calls[0])])
    assert answer.content == "The result is 18."


@pytest.mark.filterwarnings("ignore:create_react_agent has been moved")  # langchain.agents is not a dependency
def test_langgraph_react_agent_over_relay_chat_model(gateway_url, client):
    model = RelayChatModel(base_url=gateway_url, model="demo", params={"tokens_per_second": 0})
    agent = create_react_agent(model, [calculator])
    messages = agent.invoke({"messages": [("user", QUESTION)]})["messages"]
    assert [type(m) for m in messages] == [HumanMessage, AIMessage, ToolMessage, AIMessage]
    assert len(messages[1].tool_calls) == 1 and messages[2].content == "18"
    assert messages[-1].content == "The result is 18."
    # Each model call was a job on the fleet: the tool call is the first job's output.
    record = client.get(messages[1].id)
    assert record["output"]["tool_calls"][0]["args"] == {"expression": "3 * (4 + 2)"}


def test_hand_loop_with_relay_chat_model_streams_tool_call_chunks(gateway_url):
    model = RelayChatModel(base_url=gateway_url, model="demo", params={"tokens_per_second": 0})
    bound = model.bind_tools([calculator])
    chunks = list(bound.stream(QUESTION))
    [piece] = [c for c in chunks if c.tool_call_chunks]
    assert piece.tool_call_chunks[0]["name"] == "calculator"
    message = sum(chunks[1:], chunks[0])
    assert message.response_metadata["finish_reason"] == "tool_calls"
    assert message.response_metadata["model_name"] == "demo" and message.usage_metadata["total_tokens"] > 0
    history = [HumanMessage(QUESTION), message, calculator.invoke(message.tool_calls[0])]
    assert bound.invoke(history).content == "The result is 18."


def test_structured_output_by_json_schema_where_the_provider_honours_it(gateway_url, sdk):
    from pydantic import BaseModel

    class Place(BaseModel):
        city: str

    echo = RelayChatModel(base_url=gateway_url, model="openai:echo")
    assert echo.with_structured_output(Place, method="json_schema").invoke("Paris") == Place(city="Paris")
    demo = RelayChatModel(base_url=gateway_url, model="demo", params={"tokens_per_second": 0})
    assert demo.with_structured_output(Place).invoke("Lyon") == Place(city="Lyon")  # through a tool call
    with pytest.raises(Exception, match="cannot honour `response_format`"):
        demo.with_structured_output(Place, method="json_schema").invoke("Paris")
    with pytest.raises(openai.BadRequestError, match="response_format"):
        sdk.chat.completions.create(model="demo", messages=[{"role": "user", "content": "x"}],
                                    response_format={"type": "json_object"})


@pytest.mark.parametrize("extra, mentions", [
    ({"tools": [{"type": "web_search"}]}, "web_search"),
    ({"functions": [CALCULATOR["function"]]}, "use `tools`"),
    ({"tool_choice": "required"}, "needs `tools`"),
])
def test_chat_completions_refuse_what_they_cannot_honour(sdk, extra, mentions):
    with pytest.raises(openai.BadRequestError, match=mentions):
        sdk.chat.completions.create(model="demo", messages=[{"role": "user", "content": "x"}], extra_body=extra)
