"""Function tools on the Responses API through the official `openai` SDK against the real stack: the tool loop
with `previous_response_id` (blocking, and streamed in the background with a resume), an `openai:*` model's
native tool call through the fake OpenAI server, and refusals of what cannot run here."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tokenrelay.engine.arithmetic import evaluate, format_number

from ..support.http import assert_error

QUESTION = "what is 3 * (4 + 2)?"
CALCULATOR = {"type": "function", "name": "calculator", "description": "Evaluate an arithmetic expression.",
              "parameters": {"type": "object", "properties": {"expression": {"type": "string"}},
                             "required": ["expression"]}, "strict": True}
FAST = {"tokens_per_second": 0}


@pytest.fixture
def sdk(gateway_url):
    with openai.OpenAI(base_url=f"{gateway_url}/v1", api_key="unused", max_retries=0) as client:
        yield client


def run_tool(arguments: str) -> str:
    return format_number(evaluate(json.loads(arguments)["expression"]))


def test_tool_loop_with_previous_response_id(sdk, gateway_url):
    first = sdk.responses.create(model="demo", input=QUESTION, tools=[CALCULATOR], extra_body=FAST)
    assert first.status == "completed" and first.output_text == ""
    [call] = first.output
    assert call.type == "function_call" and call.status == "completed" and call.name == "calculator"
    assert call.id.startswith("fc_") and call.call_id and json.loads(call.arguments) == {"expression": "3 * (4 + 2)"}
    assert [tool.name for tool in first.tools] == ["calculator"] and first.tool_choice == "auto"
    second = sdk.responses.create(model="demo", previous_response_id=first.id, tools=[CALCULATOR], extra_body=FAST,
                                  input=[{"type": "function_call_output", "call_id": call.call_id,
                                          "output": run_tool(call.arguments)}])
    assert second.status == "completed" and second.output_text == "The result is 18."
    assert [item.type for item in second.output] == ["message"]
    # The same call, as the tokenrelay job's output.
    job = httpx.get(f"{gateway_url}/v1/jobs/{first.id.removeprefix('resp_')}").json()
    assert job["finish_reason"] == "tool_calls" and job["output"]["tool_calls"][0]["id"] == call.call_id
    assert sdk.responses.retrieve(first.id).output[0].arguments == call.arguments  # the stored response agrees


def test_calls_and_outputs_given_as_input_items(sdk):
    """The stateless loop: the client sends back the whole conversation, its function_call item included."""
    first = sdk.responses.create(model="demo", input=QUESTION, tools=[CALCULATOR], store=False, extra_body=FAST)
    [call] = first.output
    history = [{"role": "user", "content": QUESTION}, call.model_dump(exclude_none=True),
               {"type": "function_call_output", "call_id": call.call_id, "output": run_tool(call.arguments)}]
    answer = sdk.responses.create(model="demo", input=history, tools=[CALCULATOR], extra_body=FAST)
    assert answer.output_text == "The result is 18."
    items = sdk.responses.input_items.list(answer.id, order="asc")
    assert [item.type for item in items.data] == ["message", "function_call", "function_call_output"]


def test_background_stream_of_a_call_resumed_with_starting_after(sdk):
    stream = sdk.responses.create(model="demo", input=QUESTION, tools=[CALCULATOR], background=True, stream=True,
                                  extra_body={"tokens_per_second": 20})
    first = []
    for event in stream:
        first.append(event)
        if event.type == "response.in_progress":
            break  # the connection drops; the response goes on
    stream.close()
    response_id, cursor = first[0].response.id, first[-1].sequence_number
    rest = list(sdk.responses.retrieve(response_id, stream=True, starting_after=cursor))
    events = first + rest
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert [e.type for e in rest] == [
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done", "response.completed"]
    added, delta, done, item_done, completed = rest
    assert added.item.type == "function_call" and added.item.status == "in_progress" and added.item.arguments == ""
    assert delta.item_id == done.item_id == added.item.id and delta.delta == done.arguments
    assert json.loads(done.arguments) == {"expression": "3 * (4 + 2)"}
    assert item_done.item.status == "completed" and completed.response.output == [item_done.item]
    # A second full read from the start gives the same events, numbers included.
    again = list(sdk.responses.retrieve(response_id, stream=True))
    assert [e.model_dump() for e in again] == [e.model_dump() for e in events]
    answer = sdk.responses.create(model="demo", previous_response_id=response_id, tools=[CALCULATOR], stream=True,
                                  extra_body=FAST, input=[{"type": "function_call_output",
                                                           "call_id": item_done.item.call_id,
                                                           "output": run_tool(done.arguments)}])
    final = list(answer)[-1]
    assert final.type == "response.completed" and final.response.output_text == "The result is 18."


def test_tool_choice_none_and_named(sdk):
    plain = sdk.responses.create(model="demo", input=QUESTION, tools=[CALCULATOR], tool_choice="none",
                                 max_output_tokens=4, extra_body=FAST)
    assert [item.type for item in plain.output] == ["message"]
    forced = sdk.responses.create(model="demo", input="hello", tools=[CALCULATOR],
                                  tool_choice={"type": "function", "name": "calculator"}, extra_body=FAST)
    assert [item.type for item in forced.output] == ["function_call"] and forced.tool_choice.name == "calculator"


def test_openai_model_calls_its_tool_natively(sdk, openai_server):
    first = sdk.responses.create(model="openai:echo", input="what is the square root of 71?", tools=[CALCULATOR],
                                 parallel_tool_calls=False)
    [call] = first.output
    assert call.type == "function_call" and json.loads(call.arguments) == {"expression": "sqrt(71)"}
    sent = openai_server.requests[-1]
    assert sent["tools"][0]["function"]["name"] == "calculator" and sent["parallel_tool_calls"] is False
    second = sdk.responses.create(model="openai:echo", previous_response_id=first.id, tools=[CALCULATOR],
                                  input=[{"type": "function_call_output", "call_id": call.call_id, "output": "8.43"}])
    assert second.output_text == "The result is 8.43."
    sent = openai_server.requests[-1]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool"]
    assert sent[1]["tool_calls"][0]["id"] == call.call_id and sent[2]["tool_call_id"] == call.call_id


@pytest.mark.parametrize(("extra", "param", "mentions"), [
    ({"tools": [{"type": "web_search"}]}, "tools[0]", "web_search"),
    ({"tools": [CALCULATOR, {"type": "file_search", "vector_store_ids": ["vs_1"]}]}, "tools[1]", "file_search"),
    ({"tools": [{**CALCULATOR, "name": "bad name!"}]}, "tools[0]", "name"),
    ({"tools": [CALCULATOR, {**CALCULATOR, "name": None}]}, "tools[1]", "name"),
    ({"tools": [CALCULATOR], "tool_choice": {"type": "function", "name": "other"}}, "tool_choice", "other"),
    ({"tool_choice": "required"}, "tool_choice", "needs `tools`"),
    ({"tools": [CALCULATOR], "tool_choice": "sometimes"}, "tool_choice", "tool_choice"),
    ({"tools": [{**CALCULATOR, "name": f"t{n}"} for n in range(129)]}, "tools", "max_tools"),
    ({"tools": [{**CALCULATOR, "description": "x" * 20_000}]}, "tools[0]", "max_tool_schema_bytes"),
    ({"input": [{"type": "function_call", "call_id": "c1", "name": "calculator"}]}, "input[0].arguments",
     "arguments"),
    ({"input": [{"type": "function_call_output", "output": "1"}]}, "input[0].call_id", "call_id"),
])
def test_refusals_name_the_field(gateway_url, extra, param, mentions):
    response = httpx.post(f"{gateway_url}/v1/responses", json={"model": "demo", "input": "hi", **extra})
    error = assert_error(response, 400, param=param)
    assert mentions in error["message"]
    assert httpx.get(f"{gateway_url}/v1/jobs").json()["data"] == []  # refused requests never became jobs


def test_sdk_sees_a_built_in_tool_refused(sdk):
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.responses.create(model="demo", input="news?", tools=[{"type": "web_search"}])
    assert caught.value.param == "tools[0]" and "web_search" in caught.value.message
