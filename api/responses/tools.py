"""Function tools on the Responses API: its flat `tools` and `tool_choice` made into a job's (chat completions')
shape, its `function_call` / `function_call_output` input items checked (schemas.item_messages makes them the
job's assistant `tool_calls` and `tool` messages), and a job's tool calls made into `function_call` items.

Built-in OpenAI tools (web search, file search...) do not run here: a `400` names them. Arguments are model
output: relayed as JSON text, never executed.
"""

from __future__ import annotations

import json
from typing import Any

from tokenrelay.core import protocol
from tokenrelay.errors import InvalidRequest

FUNCTION_CALL_PREFIX = "fc_"
FUNCTION_FIELDS = ("name", "description", "parameters", "strict")
CHOICES = ("auto", "none", "required")


def job_tools(tools: list[Any]) -> list[dict[str, Any]]:
    """`{"type": "function", "name", ...}` (Responses) -> `{"type": "function", "function": {...}}` (jobs)."""
    out = []
    for position, tool in enumerate(tools):
        where = f"tools[{position}]"
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind != "function":
            raise InvalidRequest(f"{where}: built-in tool `{str(kind)[:40]}` is not supported by tokenrelay; "
                                 "only `function` tools (run by the client)", param=where)
        unknown = sorted(set(tool) - {"type", *FUNCTION_FIELDS})
        if unknown:
            raise InvalidRequest(f"{where}: unknown field `{unknown[0][:40]}`", param=f"{where}.{unknown[0][:40]}")
        out.append({"type": "function", "function": {k: tool[k] for k in FUNCTION_FIELDS if tool.get(k) is not None}})
    return out


def job_tool_choice(choice: Any) -> Any:
    """`auto` / `none` / `required` / `{"type": "function", "name"}` -> the job's `tool_choice`."""
    if choice in CHOICES:
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise InvalidRequest("tool_choice must be `auto`, `none`, `required` or {\"type\": \"function\", \"name\": ...}",
                         param="tool_choice")


def arguments_text(args: Any) -> str:
    """A job call's arguments as OpenAI's `arguments` JSON text (a non-object as the model wrote it)."""
    return args if isinstance(args, str) else protocol.dumps(args)


def job_args(arguments: str) -> Any:
    """`arguments` text -> a job call's `args`: the JSON object, or the text itself when it is not one."""
    try:
        value = json.loads(arguments or "{}")
    except ValueError:
        return arguments
    return value if isinstance(value, dict) else arguments


def call_item(raw: dict[str, Any], where: str) -> dict[str, Any]:
    """A `function_call` input item, checked and kept in OpenAI's shape."""
    for name in ("call_id", "name", "arguments"):
        if not isinstance(raw.get(name), str) or (name != "arguments" and not raw[name]):
            raise InvalidRequest(f"{where}.{name} must be a non-empty string", param=f"{where}.{name}")
    item = {"type": "function_call", "call_id": raw["call_id"], "name": raw["name"], "arguments": raw["arguments"]}
    if isinstance(raw.get("id"), str):
        item["id"] = raw["id"]
    return item


def output_item(raw: dict[str, Any], where: str) -> dict[str, Any]:
    """A `function_call_output` input item, its output made text."""
    if not isinstance(raw.get("call_id"), str) or not raw["call_id"]:
        raise InvalidRequest(f"{where}.call_id must be a non-empty string", param=f"{where}.call_id")
    output = raw.get("output")
    if isinstance(output, list):
        if not all(isinstance(p, dict) and p.get("type") in ("input_text", "output_text") and isinstance(
                p.get("text"), str) for p in output):
            raise InvalidRequest(f"{where}.output: text parts only", param=f"{where}.output")
        output = "".join(part["text"] for part in output)
    if not isinstance(output, str):
        raise InvalidRequest(f"{where}.output must be a string or a list of text parts", param=f"{where}.output")
    return {"type": "function_call_output", "call_id": raw["call_id"], "output": output}


def function_call_id(job_id: str, index: int) -> str:
    return f"{FUNCTION_CALL_PREFIX}{job_id}_{index}"


def function_call_item(job_id: str, call: dict[str, Any], status: str, arguments: str | None = None
                       ) -> dict[str, Any]:
    """A job's tool call (`index`, `id`, `name`, `args`) as a `function_call` output item."""
    return {"id": function_call_id(job_id, call.get("index", 0)), "type": "function_call", "status": status,
            "call_id": call["id"], "name": call["name"],
            "arguments": arguments_text(call["args"]) if arguments is None else arguments}
