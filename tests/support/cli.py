"""Running the `tokenrelay` command as a real subprocess and reading what it prints."""

from __future__ import annotations

import codecs
import os
import re
import subprocess
import sys
import threading

from .processes import ROOT


def cli(*args: str, timeout_s: float = 60.0, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tokenrelay", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout_s)


class Reader:
    """Collects a pipe's output in a thread, so a test can wait on what a running process printed."""

    def __init__(self, pipe) -> None:
        self.text = ""
        self._pipe = pipe
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        while chunk := os.read(self._pipe.fileno(), 65536):
            self.text += decoder.decode(chunk)

    def join(self, timeout_s: float = 5.0) -> str:
        self._thread.join(timeout_s)
        return self.text


def spawn_cli(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, Reader, Reader]:
    process = subprocess.Popen([sys.executable, "-m", "tokenrelay", *args], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    return process, Reader(process.stdout), Reader(process.stderr)


def job_id_from(stderr: str) -> str:
    match = re.search(r"^job ([0-9a-f]{32})$", stderr, re.MULTILINE)
    assert match, f"no job id in stderr: {stderr!r}"
    return match.group(1)
