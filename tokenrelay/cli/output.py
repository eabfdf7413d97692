"""What `tokenrelay run` / `watch` / `jobs` print: the live status line, JSON lines, the jobs table.

The status line goes to stderr, and only when stderr is a terminal. It is drawn after the text
printed so far (cursor saved first) and erased before anything else is printed (cursor restored,
screen cleared below it), so the answer on stdout never contains a trace of it, and nothing is
left of it at the end, Ctrl-C included. It is cut to the room left on the current line: a status
that wrapped at the bottom of the screen would scroll it, and the saved cursor would no longer
match the text. While no event comes it is redrawn every `TICK_S` from a thread (the clock moves
on), under the same lock as the printing of events; until the job's first event it says `queued`:
a stream has no events before a worker starts the job.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TextIO

SAVE_CURSOR, RESTORE_AND_CLEAR = "\x1b7", "\x1b8\x1b[J"
DIM, RESET = "\x1b[2m", "\x1b[0m"
DEFAULT_COLUMNS = 80  # a terminal that reports no size
TICK_S = 0.25


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
        self.queued = True  # until the job's first event
        self.lock = threading.RLock()

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
        if self.queued:
            return f"queued · {now - self.started:.1f}s"
        rate = ""
        if self.first_token_at is not None and now - self.first_token_at > 0.05:
            rate = f" · {self.tokens / (now - self.first_token_at):.1f} tokens/s"
        return f"{self.tokens} tokens{rate} · {now - self.started:.1f}s"

    def count(self, tokens: int) -> None:
        if self.first_token_at is None:
            self.first_token_at = self.clock()
        self.tokens += tokens

    @contextmanager
    def ticking(self, interval_s: float = TICK_S) -> Iterator[None]:
        """Keep the status moving while waiting for events; erased on the way out, whatever the way."""
        stop = threading.Event()

        def tick() -> None:
            while not stop.wait(interval_s):
                with self.lock:
                    if self.drawn:  # hidden while an event is being printed, or no room: leave it
                        self.show()

        thread = threading.Thread(target=tick, name="tokenrelay-status", daemon=True) if self.enabled else None
        if thread:
            thread.start()
        try:
            yield
        finally:
            stop.set()
            if thread:
                thread.join()
            with self.lock:
                self.hide()

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


def print_events(events: Iterable, out: TextIO, err: TextIO, separator: str | None = None,
                 status_line: StatusLine | None = None) -> str | None:
    """Write each token's text to `out` as it arrives, then a newline; return the job's final status
    (None if the events stopped before the `end` event).

    An `error` event's message goes to `err`. A `reset` (the job restarted on another attempt) is
    noted on `err`, and the new attempt's text starts on a new line of `out`. `status_line`, when
    given, is kept up to date while waiting and after each event, and erased before anything is printed.
    """
    status_line = status_line or StatusLine(err, enabled=False)
    printer = _EventPrinter(out, err, separator or "", status_line)
    with status_line.ticking():
        with status_line.lock:
            status_line.show()
        for event in events:
            with status_line.lock:
                status_line.hide()
                status_line.queued = False
                if printer.print(event):
                    break
                status_line.show()
    printer.close()
    return printer.status


class _EventPrinter:
    def __init__(self, out: TextIO, err: TextIO, separator: str, status_line: StatusLine) -> None:
        self.out, self.err, self.separator, self.status_line = out, err, separator, status_line
        self.line_open = self.printed = False
        self.status: str | None = None

    def print(self, event) -> bool:
        """Print one event; True once it was the `end`."""
        if event.event == "token":
            print(event.data["text"], end=self.separator, file=self.out, flush=True)
            self.line_open = self.printed = True
            self.status_line.printed(event.data["text"] + self.separator)
            self.status_line.count(event.data.get("count", 1))
            return False
        if self.line_open and event.event in ("reset", "error"):
            print(file=self.out, flush=True)
            self.status_line.printed("\n")
            self.line_open = False
        if event.event == "reset":
            print(f"[job restarted: attempt {event.data.get('attempt')} ({event.data.get('reason', '')})]",
                  file=self.err, flush=True)
        elif event.event == "error":
            print(f"error: {event.data.get('message') or 'the job failed'} ({event.data.get('type', 'error')})",
                  file=self.err, flush=True)
        elif event.event == "end":
            self.status = event.data.get("status")
            return True
        return False

    def close(self) -> None:
        if self.line_open or not self.printed:
            print(file=self.out, flush=True)


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
