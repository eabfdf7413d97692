"""What `tokenrelay dev` prints once the stack is up: where everything is, and how to reach it."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def banner(stack, model_warning: str | None = None) -> str:
    if stack.server:
        redis_line = f"{stack.redis_url}  (embedded; data in {stack.server.directory}, removed on exit)"
    else:
        redis_line = stack.redis_url
    return "\n".join([
        "",
        "tokenrelay dev is up",
        f"  gateway  {stack.url}",
        f"  web page {stack.url}/",
        f"  openai   {stack.url}/v1  (OpenAI-compatible: /v1/chat/completions, /v1/models)",
        f"  docs     {stack.url}/docs",
        f"  metrics  {stack.url}/metrics",
        f"  redis    {redis_line}",
        f"  workers  {stack.worker_count} (gateway processes: {stack.api_workers})",
        f"  logs     {stack.log_dir}",
        *([f"  warning  {model_warning}"] if model_warning else []),
        "",
        "Submit a job and stream its tokens:",
        f"  curl -s {stack.url}/v1/jobs -H 'Content-Type: application/json' \\",
        "       -d '{\"model\": \"demo\", \"prompt\": \"Hello\"}'",
        f"  curl -N {stack.url}/v1/jobs/<id>/stream",
        f"or: {_command_path()} run \"Hello\" --url {stack.url}",
        *([f"    (or `source {_in_venv('activate')}` in a new terminal, then `tokenrelay ...`)"]
          if _in_venv("activate") else []),
        "Press Ctrl-C to stop.",
        "",
    ])


def _in_venv(name: str) -> str | None:
    """A file of the running virtualenv's bin/, as another terminal reaches it (relative when below here)."""
    path = Path(sys.prefix, "bin", name)
    if sys.prefix == sys.base_prefix or not path.exists():
        return None
    relative = os.path.relpath(path)
    return relative if not relative.startswith("..") else str(path)


def _command_path() -> str:
    # A virtualenv's bin/ is on no PATH but its own: a new terminal says `tokenrelay: command not found`.
    return _in_venv("tokenrelay") or "tokenrelay"


def model_warning() -> str | None:
    from ..core.registry import unconfigured_models
    from ..core.settings import load_settings

    return unconfigured_models(load_settings())
