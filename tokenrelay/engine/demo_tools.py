"""The `demo` model's tool calls: which tool a prompt asks for, and arguments filled from the prompt.

Deterministic (the call id is a hash of the call), so a re-run of a job makes the same call.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from .arithmetic import find_expression


def _named_choice(tool_choice: Any) -> str | None:
    if isinstance(tool_choice, dict):
        return (tool_choice.get("function") or {}).get("name")
    if isinstance(tool_choice, str) and tool_choice not in ("auto", "none", "any", "required"):
        return tool_choice
    return None


def _mentioned(prompt: str, tools: list[dict]) -> dict | None:
    """The first tool the prompt names, by its whole name or a word of it (4+ letters: `get_weather` ← weather)."""
    words = set(re.findall(r"[a-z0-9]+", prompt.lower()))
    for tool in tools:
        name = tool["function"]["name"]
        parts = [part for part in re.split(r"[^a-z0-9]+", name.lower()) if len(part) >= 4]
        if name.lower() in prompt.lower() or words.intersection(parts):
            return tool
    return None


def _fill(schema: dict, prompt: str, numbers: list[str]) -> Any:
    """A value of a JSON schema's type, taken from the prompt: its next number, or its text."""
    for option in schema.get("anyOf") or ():
        if option.get("type") != "null":
            return _fill(option, prompt, numbers)
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type")
    if kind in ("integer", "number"):
        value = float(numbers.pop(0)) if numbers else 0
        return int(value) if kind == "integer" else value
    if kind == "boolean":
        return True
    if kind == "array":
        return []
    if kind == "object":
        return {}
    return prompt


def tool_call_chunk(prompt: str, tools: list[dict], tool_choice: Any = None) -> dict | None:
    """A tool call chunk answering the user's `prompt`, when a call is asked for: arithmetic (the first tool
    gets the expression), a tool named in the prompt, or a `tool_choice` that forces one."""
    if tool_choice == "none":
        return None
    expression = find_expression(prompt)
    named = _named_choice(tool_choice)
    tool = next((t for t in tools if t["function"]["name"] == named), None) if named else None
    if tool is None and expression is not None:
        tool = tools[0]
    tool = tool or _mentioned(prompt, tools)
    if tool is None and tool_choice in ("any", "required"):
        tool = tools[0]
    if tool is None:
        return None
    parameters = tool["function"].get("parameters") or {}
    properties = parameters.get("properties") or {}
    if expression is not None and tool is tools[0] and properties:
        args = {next(iter(properties)): expression}
    else:
        numbers = re.findall(r"-?\d+(?:\.\d+)?", prompt)
        required = parameters.get("required", list(properties))
        args = {name: _fill(properties[name], prompt, numbers) for name in required if name in properties}
    arguments = json.dumps(args, ensure_ascii=False)
    call_id = "call_" + hashlib.sha1((tool["function"]["name"] + arguments).encode()).hexdigest()[:12]
    return {"name": tool["function"]["name"], "args": arguments, "id": call_id, "index": 0,
            "type": "tool_call_chunk"}
