"""OpenAI's Responses API (background mode, resumable streams) over tokenrelay jobs."""

from .routes import router

__all__ = ["router"]
