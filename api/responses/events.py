"""A job's events as OpenAI Responses objects and stream events: pure, no Redis, no HTTP.

Deliberate choices (read before changing):
- `sequence_number` is a function of the job's stream alone: the translation always starts from the
  job's first entry and numbers each Responses event it produces, so the same history gives the same
  numbers on any gateway, before or after a reconnect, and `starting_after=N` is exact. A batched
  `token` event (several tokens) is one delta; `metadata` of a re-run attempt and `reset` produce no
  event; a re-run's text that agrees with what was already streamed produces deltas only past it.
- A re-run that disagrees with text already streamed ends the stream with `response.failed`
  (`stream_reset`): a Responses stream cannot take text back. `GET /v1/responses/{id}` has the answer.
- `finish_reason: length` is `incomplete` (`max_output_tokens`) only when the request set
  `max_output_tokens`: a model's own default length (the `demo` model's 64 tokens) is a natural end.
- Output items are announced when their content starts, not when a worker starts: the message item at
  the first text, a `function_call` item per `tool_call` event (a call the model finished writing: its
  arguments are one `response.function_call_arguments.delta`). A call closes the message before it, so
  text after a call (rare) is a new message item, `msg_<job>_<n>`. An answer with neither text nor calls
  is one empty message.
- A cancelled response ends with `response.incomplete` whose response has `status: "cancelled"`
  (OpenAI's stream has no event of its own for it).
"""

from __future__ import annotations

from typing import Any

from tokenrelay.core import protocol
from tokenrelay.core.registry import TOOL_CALL
from tokenrelay.core.status import JobStatus

from ..answer import Answer
from .tools import function_call_item

RESPONSE_PREFIX = "resp_"
MESSAGE_PREFIX = "msg_"
JOB_STATUS = {JobStatus.QUEUED: "queued", JobStatus.RUNNING: "in_progress", JobStatus.SUCCEEDED: "completed",
              JobStatus.FAILED: "failed", JobStatus.CANCELLED: "cancelled"}
TERMINAL_EVENT = {"completed": "response.completed", "failed": "response.failed",
                  "incomplete": "response.incomplete", "cancelled": "response.incomplete"}


def response_id(job_id: str) -> str:
    return RESPONSE_PREFIX + job_id


def message_id(job_id: str) -> str:
    return MESSAGE_PREFIX + job_id


def usage_of(usage: dict[str, Any] | None) -> dict[str, Any] | None:
    if not usage:
        return None
    given, produced = int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0))
    return {"input_tokens": given, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": produced,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": int(usage.get("total_tokens", given + produced))}


def final_status(job_status: str, finish_reason: str | None, limited: bool) -> str:
    status = JOB_STATUS.get(job_status, "in_progress")
    if status == "completed" and finish_reason == "length" and limited:
        return "incomplete"
    return status


def message_item(job_id: str, text: str | None, status: str, ordinal: int = 0) -> dict[str, Any]:
    content = [] if text is None else [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
    item_id = message_id(job_id) + (f"_{ordinal}" if ordinal else "")
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": content}


def record_output(job_id: str, text: str | None, calls: list[dict[str, Any]] | None, status: str
                  ) -> list[dict[str, Any]]:
    """A finished job's output items: its text as one message (none when it only called tools), then its calls."""
    output = []
    if text or (text is not None and not calls):
        output.append(message_item(job_id, text, "completed" if status == "completed" else "incomplete"))
    return output + [function_call_item(job_id, call, "completed") for call in calls or ()]


def response_object(job_id: str, model: str, doc: dict[str, Any], status: str, *,
                    output: list[dict[str, Any]] | None = None, usage: dict[str, Any] | None = None,
                    error: dict[str, Any] | None = None) -> dict[str, Any]:
    """The `response` object; `doc` is what the request stored with the job (see routes)."""
    incomplete = {"reason": "max_output_tokens"} if status == "incomplete" else None
    tools = doc.get("tools") or []
    return {
        "id": response_id(job_id), "object": "response", "created_at": doc.get("created_at", 0), "status": status,
        "background": doc.get("background", False), "error": error, "incomplete_details": incomplete,
        "instructions": doc.get("instructions"), "max_output_tokens": doc.get("max_output_tokens"), "model": model,
        "output": output or [], "parallel_tool_calls": doc.get("parallel_tool_calls", bool(tools)),
        "previous_response_id": doc.get("previous_response_id"),
        "reasoning": None, "store": doc.get("store", True), "temperature": doc.get("temperature"),
        "text": {"format": {"type": "text"}}, "tool_choice": doc.get("tool_choice") or ("auto" if tools else "none"),
        "tools": tools, "top_p": None,
        "truncation": "disabled", "usage": usage_of(usage), "user": None, "metadata": doc.get("metadata") or {},
    }


class ResponseEvents:
    """Turns a job's events, from its first one, into numbered Responses stream events."""

    def __init__(self, job_id: str, model: str, doc: dict[str, Any]) -> None:
        self.job_id, self.model, self.doc = job_id, model, doc
        self.limited = doc.get("max_output_tokens") is not None
        self.sequence = -1
        self.answer = Answer()
        self.items: list[dict[str, Any]] = []  # output items so far, each in its latest state
        self.message: int | None = None  # output index of the open message item (its text part announced)
        self.messages = 0  # message items opened so far (the first is msg_<job>, later ones msg_<job>_<n>)
        self.started = False
        self.error: dict[str, Any] | None = None
        self.done = False

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        self.sequence += 1
        return {"type": kind, "sequence_number": self.sequence, **fields}

    def _response(self, status: str, **fields: Any) -> dict[str, Any]:
        return response_object(self.job_id, self.model, self.doc, status, **fields)

    def opening(self) -> list[dict[str, Any]]:
        """What every stream starts with, before the job has any event."""
        queued = self._response("queued")
        return [self._event("response.created", response=queued), self._event("response.queued", response=queued)]

    def feed(self, kind: str, data: dict[str, Any]) -> list[dict[str, Any]]:
        if self.done:
            return []
        if kind == protocol.METADATA and not self.started:
            self.started = True
            return [self._event("response.in_progress", response=self._response("in_progress"))]
        if kind == protocol.TOKEN:
            return self._token(data.get("text", ""))
        if kind == TOOL_CALL:
            return self._call(data)
        if kind == protocol.RESET:
            self.answer.reset()
        elif kind == protocol.ERROR:
            self.error = {"code": data.get("type", "error"), "message": data.get("message", "the job failed")}
        elif kind == protocol.END:
            return self._end(data)
        return []

    def _part(self, text: str) -> dict[str, Any]:
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}

    def _where(self) -> dict[str, Any]:
        return {"item_id": self.items[self.message]["id"], "output_index": self.message, "content_index": 0}

    def _open_message(self) -> list[dict[str, Any]]:
        self.message, self.messages = len(self.items), self.messages + 1
        self.items.append(message_item(self.job_id, "", "in_progress", self.messages - 1))
        return [
            self._event("response.output_item.added", output_index=self.message,
                        item=message_item(self.job_id, None, "in_progress", self.messages - 1)),
            self._event("response.content_part.added", **self._where(), part=self._part("")),
        ]

    def _close_message(self, status: str) -> list[dict[str, Any]]:
        if self.message is None:
            return []
        item = self.items[self.message]
        item["status"] = status
        text = item["content"][0]["text"]
        events = [
            self._event("response.output_text.done", **self._where(), text=text, logprobs=[]),
            self._event("response.content_part.done", **self._where(), part=self._part(text)),
            self._event("response.output_item.done", output_index=self.message, item=dict(item)),
        ]
        self.message = None
        return events

    def _reset_failure(self) -> list[dict[str, Any]]:
        self.done = True
        error = {"code": "stream_reset", "message": "the job restarted with a different answer; read it at "
                 f"/v1/responses/{response_id(self.job_id)}"}
        return [self._event("response.failed", response=self._response(
            "failed", output=self._final_items("incomplete"), error=error))]

    def _token(self, text: str) -> list[dict[str, Any]]:
        new = self.answer.add(text)
        if new is None:
            return self._reset_failure()
        if not new:
            return []
        events = self._open_message() if self.message is None else []
        self.items[self.message]["content"][0]["text"] += new
        return events + [self._event("response.output_text.delta", **self._where(), delta=new, logprobs=[])]

    def _call(self, call: dict[str, Any]) -> list[dict[str, Any]]:
        """A whole call (the job streams calls once complete): its item, its arguments as one delta, done."""
        new = self.answer.add_call(call)
        if new is None:
            return self._reset_failure()
        if not new:
            return []
        events = self._close_message("completed")
        index = len(self.items)
        item = function_call_item(self.job_id, call, "completed")
        self.items.append(item)
        where = {"item_id": item["id"], "output_index": index}
        return events + [
            self._event("response.output_item.added", output_index=index,
                        item=function_call_item(self.job_id, call, "in_progress", arguments="")),
            self._event("response.function_call_arguments.delta", **where, delta=item["arguments"]),
            self._event("response.function_call_arguments.done", **where, name=item["name"],
                        arguments=item["arguments"]),
            self._event("response.output_item.done", output_index=index, item=dict(item)),
        ]

    def _final_items(self, open_status: str) -> list[dict[str, Any]]:
        items = [dict(item) for item in self.items]
        if self.message is not None:
            items[self.message]["status"] = open_status
        return items

    def _end(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        self.done = True
        status = final_status(data.get("status", JobStatus.FAILED), data.get("finish_reason"), self.limited)
        if status not in TERMINAL_EVENT:  # never expected: every end a job writes has a terminal status
            status = "failed"
        events = []
        if status in ("completed", "incomplete"):
            if not self.items:  # an empty answer is still one (empty) message
                events += self._open_message()
            events += self._close_message("completed" if status == "completed" else "incomplete")
        error = (self.error or {"code": "error", "message": "the job failed"}) if status == "failed" else None
        final = self._response(status, output=self._final_items("incomplete"), usage=data.get("usage"), error=error)
        return events + [self._event(TERMINAL_EVENT[status], response=final)]


def sse(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {protocol.dumps(event)}\n\n".encode()
