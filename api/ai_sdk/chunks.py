"""A job's events as AI SDK UI message stream chunks: pure, no Redis, no HTTP.

Deliberate choices (read before changing):
- The translation always starts from the job's first event, so a reconnect (or a reload) gets the
  whole message again, each chunk once: `start` (the message id is the job's), `start-step`,
  `text-start`, one `text-delta` per `token` event (a batched event is one delta), `text-end`,
  `finish-step`, `finish`, then `[DONE]`.
- A re-run after a lost worker adds deltas only past the text already sent, when it agrees with
  it; when it does not, the stream ends with an `error` chunk (a UI message stream cannot take text back).
- A failed job ends with `error` (its safe message); a cancelled one with `abort`.
"""

from __future__ import annotations

from typing import Any

from tokenrelay.core import protocol
from tokenrelay.core.status import JobStatus

from ..answer import Answer

DONE_FRAME = b"data: [DONE]\n\n"
FINISH_REASONS = {"stop": "stop", "length": "length", "tool_calls": "tool-calls", "content_filter": "content-filter"}


def message_id(job_id: str) -> str:
    return f"msg_{job_id}"


def frame(chunk: dict[str, Any]) -> bytes:
    return b"data: " + protocol.dumps(chunk).encode() + b"\n\n"


class UIMessageChunks:
    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.text_id = f"text_{job_id}"
        self.answer = Answer()
        self.opened = False
        self.error: str | None = None
        self.done = False

    def opening(self) -> list[dict[str, Any]]:
        return [{"type": "start", "messageId": message_id(self.job_id)}]

    def feed(self, kind: str, data: dict[str, Any]) -> list[dict[str, Any]]:
        if self.done:
            return []
        if kind == protocol.METADATA and not self.opened:
            return self._open()
        if kind == protocol.TOKEN:
            return self._token(data.get("text", ""))
        if kind == protocol.RESET:
            self.answer.reset()
        elif kind == protocol.ERROR:
            self.error = data.get("message") or "the job failed"
        elif kind == protocol.END:
            return self._end(data)
        return []

    def _open(self) -> list[dict[str, Any]]:
        self.opened = True
        return [{"type": "start-step"}, {"type": "text-start", "id": self.text_id}]

    def _token(self, text: str) -> list[dict[str, Any]]:
        chunks = [] if self.opened else self._open()
        new = self.answer.add(text)
        if new is None:
            self.done = True
            return chunks + [{"type": "error", "errorText": "the job restarted with a different answer; "
                              f"read it at /v1/jobs/{self.job_id}"}]
        if new:
            chunks.append({"type": "text-delta", "id": self.text_id, "delta": new})
        return chunks

    def _end(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        self.done = True
        status = data.get("status")
        closing = [{"type": "text-end", "id": self.text_id}, {"type": "finish-step"}] if self.opened else []
        if status == JobStatus.SUCCEEDED:
            reason = FINISH_REASONS.get(data.get("finish_reason") or "stop", "other")
            return closing + [{"type": "finish", "finishReason": reason}]
        if status == JobStatus.CANCELLED:
            return closing + [{"type": "abort", "reason": "cancelled"}]
        return closing + [{"type": "error", "errorText": self.error or "the job failed"}]
