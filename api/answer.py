"""An answer's text across attempts, for protocols that cannot take text back (chat completions,
Responses, the AI SDK's UI message stream).

After a `reset` (the job restarted on another worker) the new attempt's text is passed on only past
what the client already has, as long as it agrees with it; `add` returns None when it disagrees.
"""

from __future__ import annotations


class Answer:
    def __init__(self) -> None:
        self.sent = ""
        self.attempt_text = ""

    def reset(self) -> None:
        self.attempt_text = ""

    def add(self, text: str) -> str | None:
        """The part of `text` the client does not have yet; None if it contradicts what was sent."""
        self.attempt_text += text
        if len(self.attempt_text) <= len(self.sent):
            return "" if self.sent.startswith(self.attempt_text) else None
        if not self.attempt_text.startswith(self.sent):
            return None
        new, self.sent = self.attempt_text[len(self.sent):], self.attempt_text
        return new
