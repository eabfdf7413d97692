"""tokenrelay: run LLM work on Celery workers and stream its tokens to many HTTP clients."""

from .client import AsyncClient, Client
from .core.settings import Settings, load_settings
from .errors import ClientError, TokenRelayError
from .events import Event

__all__ = ["AsyncClient", "Client", "ClientError", "Event", "Settings", "TokenRelayError", "load_settings"]
__version__ = "0.1.0"
