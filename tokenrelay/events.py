"""Stream events: the one `Event` type workers emit and clients receive, and the builders of the
events whose shape the product fixes (metadata, reset, error, end).

Imports neither LangChain, Redis nor HTTP, so the client uses it as is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .core.status import JobStatus

# Event types on a job's stream (graph jobs add theirs: tokenrelay/core/registry.py).
METADATA = "metadata"
TOKEN = "token"
RESET = "reset"
ERROR = "error"
END = "end"
EVENT_TYPES = (METADATA, TOKEN, RESET, ERROR, END)


@dataclass(frozen=True)
class Event:
    """One event of a job's stream. A worker emits it without an id; a client receives it with the id of
    its stream entry (`<attempt>-<seq>`)."""

    event: str  # its type
    data: Any  # JSON-able; decoded JSON on the client side
    id: str | None = None

    @property
    def is_end(self) -> bool:
        return self.event == END


# Errors a client may see: a type and a fixed, safe message. Provider text can carry secrets
# or prompts, so it goes to the worker's log only.
ERROR_MESSAGES: dict[str, str] = {
    "timeout": "the job ran longer than its time limit",
    "provider_error": "the model provider returned an error",
    "provider_unavailable": "the model provider could not be reached",
    "configuration_error": "the model's provider is not configured on the workers: openai:* models need "
                           "OPENAI_API_KEY (or OPENAI_BASE_URL) set there",
    "internal_error": "the job failed on the worker",
    "store_full": "the job store (Redis) is out of memory; the job was stopped",
    "store_lost": "the job store (Redis) lost part of this job's output in a failover; submit the job again",
    "job_lost": "the job's data was lost when the job store restarted without persistence; submit the job again",
}

# A job that did not succeed says why in its finish_reason, whatever the model said.
FINISH_REASONS = {JobStatus.CANCELLED: "cancelled", JobStatus.FAILED: "error"}


def usage(input_tokens: int = 0, output_tokens: int = 0) -> dict[str, int]:
    """Token counts, as the `end` event and the job record carry them."""
    return {"input_tokens": input_tokens, "output_tokens": output_tokens, "total_tokens": input_tokens + output_tokens}


def metadata(job_id: str, attempt: int, model: str, graph: str | None = None) -> Event:
    data: dict[str, Any] = {"job_id": job_id, "attempt": attempt, "model": model}
    if graph:
        data["graph"] = graph
    return Event(METADATA, data)


def reset(attempt: int, reason: str) -> Event:
    """Forget the tokens of this job so far: `reason` says why they are sent again."""
    return Event(RESET, {"attempt": attempt, "reason": reason})


def error(kind: str) -> Event:
    return Event(ERROR, {"type": kind, "message": ERROR_MESSAGES[kind]})


def end(status: JobStatus, token_usage: dict[str, int] | None = None, finish_reason: str | None = None) -> Event:
    """The last event of every stream. Without usage, it counts zero tokens."""
    return Event(END, {"status": JobStatus(status), "usage": token_usage or usage(),
                       "finish_reason": FINISH_REASONS.get(status, finish_reason)})
