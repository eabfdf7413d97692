"""Graph jobs at the gateway: check a `{"graph", "input", "stream_mode"}` body and build its stored request.

The gateway only checks names against the registry in its settings; it never imports a graph.
"""

from __future__ import annotations

from typing import Any

from tokenrelay.core.registry import check_graph, check_model
from tokenrelay.core.settings import Settings

from .schemas import JobRequest

DEFAULT_GRAPH_MODEL = "demo"


def graph_request(body: JobRequest, settings: Settings) -> tuple[str, dict[str, Any]]:
    """The chat model a graph job uses and the request document the worker reads."""
    graph = check_graph(body.graph, settings)
    model = check_model(body.model or DEFAULT_GRAPH_MODEL, settings)
    doc = {"graph": graph, "input": body.input or {}, "stream_mode": body.stream_modes(),
           "params": body.params.model_dump(exclude_none=True)}
    return model, doc
