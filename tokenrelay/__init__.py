"""tokenrelay: run LLM work on Celery workers and stream its tokens to many HTTP clients."""

from __future__ import annotations

from typing import Any

from .client import AsyncClient, Client
from .errors import ClientError, TokenRelayError
from .events import Event

__all__ = ["AsyncClient", "Client", "ClientError", "Event", "Settings", "TokenRelayError", "load_settings"]
# The one place the version is written: pyproject.toml reads it, and so do the CLI and the gateway.
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # Settings belong to the server (pydantic-settings, the `server` extra): loaded on first use,
    # so a client-only install imports the client without them.
    if name in ("Settings", "load_settings"):
        from .core import settings

        return getattr(settings, name)
    raise AttributeError(f"module 'tokenrelay' has no attribute {name!r}")
