"""The Vercel AI SDK's UI message stream protocol (`useChat`, resumable streams) over tokenrelay jobs."""

from .routes import router

__all__ = ["router"]
