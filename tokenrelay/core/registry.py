"""The names a client may ask for: models, graphs, stream modes and graph event types.

The gateway validates requests against this module alone; it never imports a model or a graph,
so it never loads LangChain or LangGraph. The worker builds what the names stand for (engine/).
"""

from __future__ import annotations

from ..errors import UnknownGraph, UnknownModel
from .settings import Settings

OPENAI_PREFIX = "openai:"

STREAM_MODES = ("messages", "custom", "updates", "values")
DEFAULT_STREAM_MODES = ("messages",)

# Event types a graph run adds to the core's.
CUSTOM, UPDATE, VALUE, TOOL_CALL, TOOL_RESULT = "custom", "update", "value", "tool_call", "tool_result"
GRAPH_EVENT_TYPES = (CUSTOM, UPDATE, VALUE, TOOL_CALL, TOOL_RESULT)


def check_model(name: str, settings: Settings) -> str:
    if name not in settings.models:
        raise UnknownModel(name, settings.models)
    return name


def supports_response_format(name: str) -> bool:
    """Whether a model can be held to a JSON `response_format` (the offline `demo` model cannot)."""
    return name.startswith(OPENAI_PREFIX)


def unconfigured_models(settings: Settings) -> str | None:
    """A warning naming the listed models whose provider has no credentials here, or None.

    Said at start-up by workers and `tokenrelay dev`: without it, the only trace is the failed jobs.
    """
    missing = [name for name in settings.models if name.startswith(OPENAI_PREFIX)]
    if not missing or settings.openai_api_key or settings.openai_base_url:
        return None
    return (f"{', '.join(missing)}: OPENAI_API_KEY (or OPENAI_BASE_URL) is not set, so jobs of these models "
            "will fail; set it for the workers, or use the offline `demo` model")


def check_graph(name: str, settings: Settings) -> str:
    if name not in settings.graphs:
        raise UnknownGraph(name, sorted(settings.graphs))
    return name
