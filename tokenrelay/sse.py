"""A Server-Sent Events parser (the WHATWG rules tokenrelay's streams need), pure and incremental."""

from __future__ import annotations

import json
from collections.abc import Iterator

from .events import Event


class SSEParser:
    """Feed it text as it arrives; it yields each complete event once its blank line is seen."""

    def __init__(self) -> None:
        self._buffer = ""
        self._id: str | None = None
        self._event = ""
        self._data: list[str] = []
        self._after_cr = False

    def feed(self, text: str) -> Iterator[Event]:
        if self._after_cr and text.startswith("\n"):
            text = text[1:]
        self._after_cr = False
        self._buffer += text
        while True:
            cut = _line_end(self._buffer)
            if cut is None:
                return
            line, length, self._after_cr = cut
            self._buffer = self._buffer[length:]
            event = self._line(line)
            if event is not None:
                yield event

    def _line(self, line: str) -> Event | None:
        if line == "":
            if not self._data:
                self._event = ""
                return None
            raw = "\n".join(self._data)
            event = Event(self._event or "message", json.loads(raw) if raw else None, self._id)
            self._event, self._data = "", []
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        return None


def _line_end(buffer: str) -> tuple[str, int, bool] | None:
    """The first complete line, the length it takes with its terminator, and whether that was a lone CR
    at the very end of the buffer (an LF arriving next belongs to it)."""
    lf, cr = buffer.find("\n"), buffer.find("\r")
    if cr == -1 or (lf != -1 and lf < cr):
        return (buffer[:lf], lf + 1, False) if lf != -1 else None
    if cr + 1 == len(buffer):
        return buffer[:cr], cr + 1, True
    return buffer[:cr], cr + (2 if buffer[cr + 1] == "\n" else 1), False
