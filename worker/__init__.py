"""The tokenrelay worker: a Celery app whose task runs jobs and publishes their tokens.

`celery -A worker worker` works: `worker.app` is built from the environment on first access,
never at import.
"""

from __future__ import annotations

from typing import Any

from .celery_app import create_worker_app

__all__ = ["create_worker_app"]

_default_app = None


def __getattr__(name: str) -> Any:
    global _default_app
    if name in ("app", "celery"):
        if _default_app is None:
            from tokenrelay.core.settings import load_settings

            _default_app = create_worker_app(load_settings())
        return _default_app
    raise AttributeError(name)
