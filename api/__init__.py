"""The tokenrelay gateway: FastAPI app relaying job streams from Redis as Server-Sent Events."""

from .app import create_app

__all__ = ["create_app"]
