"""The `tokenrelay` command: a thin layer over the public client, plus `dev`, `api` and `worker`."""

from .commands import main

__all__ = ["main"]
