"""What `tokenrelay run` / `watch` / `jobs` print: the live status line, JSON lines, the jobs table.

The status line goes to stderr, and only when stderr is a terminal. It is drawn after the text
printed so far (cursor saved first) and erased before anything else is printed (cursor restored,
screen cleared below it), so the answer on stdout never contains a trace of it, and nothing is
left of it at the end. It is cut to the room left on the current line: a status that wrapped at
the bottom of the screen would scroll it, and the saved cursor would no longer match the text.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from typing import TextIO

SAVE_CURSOR, RESTORE_AND_CLEAR = "\x1b7", "\x1b8\x1b[J"
DIM, RESET = "\x1b[2m", "\x1b[0m"
DEFAULT_COLUMNS = 80  # a terminal that reports no size


class StatusLine:
    def __init__(self, err: TextIO, enabled: bool, clock=time.monotonic, shares_line: bool = False) -> None:
        self.err = err
        self.enabled = enabled
        self.shares_line = shares_line  # stdout is the same terminal: the status follows the text
        self.column = 0
        self.clock = clock
        self.started = clock()
        self.first_token_at: float | None = None
        self.tokens = 0
        self.drawn = False

    @classmethod
    def for_terminal(cls, err: TextIO, out: TextIO) -> "StatusLine":
        enabled = err.isatty() and os.environ.get("TERM", "") != "dumb"
        return cls(err, enabled, shares_line=out.isatty())

    def columns(self) -> int:
        try:
            return os.get_terminal_size(self.err.fileno()).columns or DEFAULT_COLUMNS
        except (OSError, ValueError, AttributeError):
            return DEFAULT_COLUMNS

    def printed(self, text: str) -> None:
        """Follow the cursor's column through text printed on stdout (wide characters count as one)."""
        if not self.shares_line:
            return
        head, newline, tail = text.rpartition("\n")
        self.column = len(tail) if newline else self.column + len(text)
        self.column %= self.columns()

    def text(self) -> str:
        now = self.clock()
        rate = ""
        if self.first_token_at is not None and now - self.first_token_at > 0.05:
            rate = f" · {self.tokens / (now - self.first_token_at):.1f} tokens/s"
        return f"{self.tokens} tokens{rate} · {now - self.started:.1f}s"

    def count(self, tokens: int) -> None:
        if self.first_token_at is None:
            self.first_token_at = self.clock()
        self.tokens += tokens

    def hide(self) -> None:
        if self.drawn:
            self.err.write(RESTORE_AND_CLEAR)
            self.err.flush()
            self.drawn = False

    def show(self) -> None:
        # Redrawn after every event: it was erased before the event's text, and events already
        # batch tokens when they come fast, so this costs a few bytes per write, not per token.
        if not self.enabled:
            return
        self.hide()
        room = self.columns() - self.column - 1
        status = f"  [{self.text()}]"
        if room < 12:
            return
        self.err.write(f"{SAVE_CURSOR}{DIM}{status[:room]}{RESET}")
        self.err.flush()
        self.drawn = True


def print_json_events(events: Iterable, out: TextIO) -> str | None:
    """One JSON object per event (`id`, `event`, `data`) on `out`; returns the final status."""
    for event in events:
        print(json.dumps({"id": event.id, "event": event.event, "data": event.data}, ensure_ascii=False),
              file=out, flush=True)
        if event.event == "end":
            return event.data.get("status")
    return None


def print_jobs(jobs: list[dict], out: TextIO, as_json: bool) -> None:
    if as_json:
        for job in jobs:
            print(json.dumps(job, ensure_ascii=False), file=out)
        return
    if not jobs:
        print("no recent jobs", file=out)
        return
    rows = [("ID", "STATUS", "MODEL", "TOKENS", "CREATED")]
    for job in jobs:
        tokens = job.get("output_tokens")
        rows.append((job["id"], job["status"], job["model"], "-" if tokens is None else str(tokens),
                     job["created_at"]))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip(), file=out)
