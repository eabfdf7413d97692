"""Graphs as jobs: the server-side registry of LangGraph graphs, and a graph run turned into stream events.

Pure like the runner: it knows neither Celery, Redis nor HTTP. Token events keep only the fields a
client uses (node, tags, run id, step, model), not LangGraph's whole metadata dict.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ToolMessage

from .. import events
from ..core.registry import (
    CUSTOM,
    STREAM_MODES,
    TOOL_CALL,
    TOOL_RESULT,
    UPDATE,
    VALUE,
    check_graph,
)
from ..core.settings import Settings
from ..events import Event
from .runner import Outcome, _chunk_text, _valid_utf8

log = logging.getLogger("tokenrelay.engine.graphs")

# Tags LangChain adds for its own bookkeeping; clients never filter on them.
INTERNAL_TAG_PREFIXES = ("seq:", "langsmith:", "graph:step:")
RUN_ID_PREFIXES = ("lc_run--", "run-")
ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool"}


def _import(target: str) -> Any:
    module_name, _, attribute = target.partition(":")
    value: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        value = getattr(value, part)
    return value


def preload(settings: Settings) -> None:
    """Import every registered graph's module now, so no job pays for (or stalls the loop on) an import."""
    for name, target in settings.graphs.items():
        try:
            _import(target)
        except Exception:  # noqa: BLE001 - a broken entry fails its own jobs, not the worker
            log.exception("graph %s (%s) cannot be imported", name, target)


def load_graph(name: str, settings: Settings, model: BaseChatModel) -> Any:
    """The graph for a registered name: a compiled graph as is, or what its factory builds around `model`."""
    target = _import(settings.graphs[check_graph(name, settings)])
    return target if hasattr(target, "astream") else target(model)


def to_jsonable(value: Any, depth: int = 0) -> Any:
    """Graph state as plain JSON: messages become {"role", "content", ...}; unknown objects their str()."""
    if depth > 32:
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, BaseMessage):
        return message_dict(value)
    if isinstance(value, dict):
        return {str(key): to_jsonable(item, depth + 1) for key, item in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [to_jsonable(item, depth + 1) for item in value]
    if hasattr(value, "model_dump"):
        return to_jsonable(value.model_dump(), depth + 1)
    return str(value)


def message_dict(message: BaseMessage) -> dict[str, Any]:
    doc: dict[str, Any] = {"role": ROLES.get(message.type, message.type), "content": _chunk_text(message.content)}
    if isinstance(message, AIMessage) and message.tool_calls:
        doc["tool_calls"] = [{"id": c.get("id"), "name": c["name"], "args": c["args"]} for c in message.tool_calls]
    if isinstance(message, ToolMessage):
        doc["tool_call_id"] = message.tool_call_id
        doc["name"] = message.name
    return doc


def _run_id(message_id: str | None) -> str | None:
    for prefix in RUN_ID_PREFIXES:
        if message_id and message_id.startswith(prefix):
            return message_id[len(prefix):]
    return message_id


def _token_data(text: str, index: int, chunk: AIMessageChunk, metadata: dict[str, Any]) -> dict[str, Any]:
    tags = [tag for tag in metadata.get("tags") or () if not tag.startswith(INTERNAL_TAG_PREFIXES)]
    return {
        "text": text,
        "index": index,
        "node": metadata.get("langgraph_node"),
        "tags": tags,
        "run_id": _run_id(chunk.id),
        "step": metadata.get("langgraph_step"),
        "model": metadata.get("ls_model_name"),
    }


def _add_usage(outcome: Outcome, usage: dict[str, Any] | None) -> None:
    if not usage:
        return
    for name in ("input_tokens", "output_tokens", "total_tokens"):
        outcome.usage[name] = outcome.usage.get(name, 0) + int(usage.get(name, 0))


def _tool_events(node: str, update: Any) -> list[Event]:
    """`tool_call` for each call a model finished emitting, `tool_result` for each tool answer."""
    messages = update.get("messages") if isinstance(update, dict) else None
    if isinstance(messages, BaseMessage):
        messages = [messages]
    events: list[Event] = []
    for message in messages or ():
        if isinstance(message, AIMessage):
            for call in message.tool_calls:
                events.append(Event(TOOL_CALL, {"node": node, "run_id": _run_id(message.id), "id": call.get("id"),
                                                "name": call["name"], "args": to_jsonable(call["args"])}))
        elif isinstance(message, ToolMessage):
            events.append(Event(TOOL_RESULT, {"node": node, "id": message.tool_call_id, "name": message.name,
                                              "content": _chunk_text(message.content), "status": message.status}))
    return events


def final_text(state: Any) -> str | None:
    """The agent's final answer: the text of the last AI message in the state, if it has messages."""
    messages = state.get("messages") if isinstance(state, dict) else None
    for message in reversed(messages or []):
        if isinstance(message, AIMessage):
            return _chunk_text(message.content)
    return None


async def stream_graph(graph: Any, graph_input: dict[str, Any], modes: list[str], outcome: Outcome,
                       config: dict[str, Any] | None = None) -> AsyncIterator[Event]:
    """Yield the events of one graph run in the client's stream modes, filling `outcome` as it goes.

    `messages`, `updates` and `values` are always read (usage comes from the messages, tool events
    from the updates, the job's output from the last values); they become events only if asked for.
    """
    wanted = set(modes)
    requested = [mode for mode in STREAM_MODES if mode in wanted or mode != "custom"]
    async for mode, chunk in graph.astream(graph_input, config=config, stream_mode=requested):
        if mode == "messages":
            message, metadata = chunk
            if not isinstance(message, AIMessageChunk):
                continue
            _add_usage(outcome, message.usage_metadata)
            text = _valid_utf8(_chunk_text(message.content))
            if text and "messages" in wanted:
                yield Event(events.TOKEN, _token_data(text, outcome.tokens, message, metadata))
                outcome.tokens += 1
                outcome.text_parts.append(text)
        elif mode == "updates":
            for node, update in (chunk or {}).items():
                for event in _tool_events(node, update):
                    yield event
                if "updates" in wanted:
                    yield Event(UPDATE, {"node": node, "data": to_jsonable(update)})
        elif mode == "values":
            outcome.state = chunk
            if "values" in wanted:
                yield Event(VALUE, {"data": to_jsonable(chunk)})
        elif mode == "custom":
            yield Event(CUSTOM, {"data": to_jsonable(chunk)})
    # The output text is the agent's final answer; other graphs' output is their state.
    answer = final_text(outcome.state)
    outcome.text_parts = [answer] if answer else []
    outcome.state = to_jsonable(outcome.state)
    outcome.finish_reason = outcome.finish_reason or "stop"
    outcome.usage = outcome.final_usage
