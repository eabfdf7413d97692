"""An answer's text (and tool calls) across attempts, for protocols that cannot take output back (chat
completions, Responses, the AI SDK's UI message stream).

After a `reset` (the job restarted on another worker) the new attempt's output is passed on only past
what the client already has, as long as it agrees with it; `add` and `add_call` say when it disagrees.
"""

from __future__ import annotations

from typing import Any


class Answer:
    def __init__(self) -> None:
        self.sent = ""
        self.attempt_text = ""
        self.calls: list[dict[str, Any]] = []
        self.attempt_calls = 0

    def reset(self) -> None:
        self.attempt_text = ""
        self.attempt_calls = 0

    def add(self, text: str) -> str | None:
        """The part of `text` the client does not have yet; None if it contradicts what was sent."""
        self.attempt_text += text
        if len(self.attempt_text) <= len(self.sent):
            return "" if self.sent.startswith(self.attempt_text) else None
        if not self.attempt_text.startswith(self.sent):
            return None
        new, self.sent = self.attempt_text[len(self.sent):], self.attempt_text
        return new

    def add_call(self, call: dict[str, Any]) -> bool | None:
        """True for a call the client does not have yet, False for one it has, None for a contradiction."""
        position, self.attempt_calls = self.attempt_calls, self.attempt_calls + 1
        if position < len(self.calls):
            return False if self.calls[position] == call else None
        self.calls.append(call)
        return True
