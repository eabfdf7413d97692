"""Child processes of `tokenrelay dev`, the tests' stacks and the benchmark: start, wait until ready, stop.

Deliberate choices (read before changing):
- Each child runs in its own session (process group): a Ctrl-C in the terminal reaches only the
  supervisor, which then stops its children in the order it chooses.
- Output goes to a log file, never to the supervisor's terminal; on failure the error carries the
  log's last lines, so the cause is on screen.
- Stopping sends SIGTERM to the group, waits, then SIGKILLs the group even when its leader has
  exited: a grandchild may still hold it, and nothing a supervisor started may outlive it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path

import httpx

STOP_TIMEOUT_S = 10.0
SLOW_STOP_NOTE_AFTER_S = 3.0
LOG_TAIL_LINES = 30
POLL_S = 0.1


class SupervisorError(RuntimeError):
    """Raised when a child cannot be started, exits on its own, or is not ready in time."""


class ChildExited(SupervisorError):
    """Raised when a supervised child has exited while it was expected to run."""

    def __init__(self, child: "Child") -> None:
        super().__init__(f"the {child.name} exited unexpectedly (code {child.returncode}); "
                         f"last lines of {child.log_path}:\n{child.tail()}")
        self.child = child


class NotReady(SupervisorError):
    """Raised when a readiness check has not passed within its timeout."""


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last `lines` lines of a log file ("" if it cannot be read)."""
    try:
        with open(path, errors="replace") as log:
            return "".join(deque(log, maxlen=lines))
    except OSError:
        return ""


class Child:
    """One command in its own session, its output (stdout and stderr) in `log_path`."""

    def __init__(self, name: str, args: list[str], *, env: dict[str, str], log_path: Path,
                 cwd: Path | None = None) -> None:
        self.name = name
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(args, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def alive(self) -> bool:
        return self.process.poll() is None

    def signal(self, sig: int) -> None:
        """Send `sig` to the child itself (not its group), if it still runs."""
        if self.alive():
            os.kill(self.process.pid, sig)

    def signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            pass

    def output(self) -> str:
        """Everything the child has written so far."""
        return self.log_path.read_text(errors="replace")

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return tail(self.log_path, lines)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        stop_all([self], timeout_s)


def stop_all(children: Iterable[Child], timeout_s: float = STOP_TIMEOUT_S, *, hurry: threading.Event | None = None,
             slow_note: Callable[[], None] | None = None) -> None:
    """SIGTERM each child's group, wait up to `timeout_s` for all of them (no longer once `hurry` is set),
    then SIGKILL every group. `slow_note` is called once if they still run after a few seconds."""
    children = list(children)
    for child in children:
        if child.alive():
            child.signal_group(signal.SIGTERM)
    started = time.monotonic()
    while any(child.alive() for child in children) and time.monotonic() < started + timeout_s:
        if hurry is not None and hurry.is_set():
            break
        if slow_note is not None and time.monotonic() > started + SLOW_STOP_NOTE_AFTER_S:
            slow_note()
            slow_note = None
        time.sleep(POLL_S)
    for child in children:
        child.signal_group(signal.SIGKILL)
        child.process.wait()


def wait_ready(probe: Callable[[], bool], *, what: str, timeout_s: float, watch: Iterable[Child] = (),
               interval_s: float = POLL_S, stop: threading.Event | None = None) -> bool:
    """Poll `probe` until it is true (True), or `stop` is set (False).

    Raises ChildExited as soon as a watched child exits, NotReady after `timeout_s`.
    """
    watch = list(watch)
    deadline = time.monotonic() + timeout_s
    while stop is None or not stop.is_set():
        for child in watch:
            if not child.alive():
                raise ChildExited(child)
        if probe():
            return True
        if time.monotonic() > deadline:
            raise NotReady(f"{what} not ready after {timeout_s:.0f} s")
        if stop is not None:
            stop.wait(interval_s)
        else:
            time.sleep(interval_s)
    return False


class HttpProbe:
    """A readiness probe: GET `url` and pass it to `accept`; `last` says what the latest attempt saw."""

    def __init__(self, url: str, accept: Callable[[httpx.Response], bool] = lambda r: r.status_code == 200,
                 timeout_s: float = 1.0) -> None:
        self.url, self.accept, self.timeout_s = url, accept, timeout_s
        self.last = "no answer"

    def __call__(self) -> bool:
        try:
            response = httpx.get(self.url, timeout=self.timeout_s)
        except httpx.HTTPError as exc:
            self.last = type(exc).__name__
            return False
        self.last = f"HTTP {response.status_code} {response.text[:200]}"
        try:
            return bool(self.accept(response))
        except (ValueError, KeyError, TypeError):  # an answer of another shape: not ready yet
            return False
