"""N gateway processes on one port (`tokenrelay api --workers N`, `python -m api.server --workers N`).

Deliberate choices:
- Each process binds its own listening socket with SO_REUSEPORT, so the kernel spreads new
  connections evenly over the processes (one shared accept socket lets whichever process wakes
  first take a whole burst). Each process is a complete gateway: its own relay, Redis pool and
  limits. They share nothing, so readers of one job on different processes each get the job's
  stream from Redis, by id, and see the same sequence.
- The parent only supervises: it forwards SIGTERM/SIGINT, and starts a process again when one
  dies, so a crash costs its own connections only (clients resume with Last-Event-ID).
- Each process runs in a session of its own, and is told to stop (SIGTERM) when the parent dies.
  Linux schedules CPU fairly between sessions (autogroups), not between processes: N processes in
  the parent's session shared one session's share, so beside workers on the same machine (`tokenrelay
  dev`, one VM) the gateway got less CPU the more processes it had to spread it over. Measured with
  two gateway processes beside two workers, three bursts of 1,000 jobs on one stack: token lag p99
  0.27-0.56x of what it was with one shared session.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time

RESTART_DELAY_S = 1.0
POLL_S = 0.2
CHILD_STOP_TIMEOUT_S = 30.0
PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def listening_socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


class Gateways:
    """N `python -m api.server --reuse-port` processes serving one port; one that dies is started again."""

    def __init__(self, count: int, host: str, port: int, child_args: list[str]) -> None:
        self.count, self.host, self.port = count, host, port
        self.args = [sys.executable, "-m", "api.server", "--host", host, "--port", str(port), "--reuse-port",
                     *child_args]
        self.children: list[subprocess.Popen] = []
        self.stopping = False

    def _start_one(self) -> subprocess.Popen:
        return subprocess.Popen(self.args, start_new_session=True, preexec_fn=_stop_with(os.getpid()))

    def run(self) -> int:
        # Fail early and clearly if the port is taken by anything that is not one of ours.
        listening_socket(self.host, self.port, reuse_port=True).close()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop)
        self.children = [self._start_one() for _ in range(self.count)]
        while not self.stopping:
            for position, child in enumerate(self.children):
                if child.poll() is not None and not self.stopping:
                    print(f"gateway process {child.pid} exited with code {child.returncode}; starting another",
                          file=sys.stderr, flush=True)
                    time.sleep(RESTART_DELAY_S)
                    self.children[position] = self._start_one()
            time.sleep(POLL_S)
        return self._wait_all()

    def _stop(self, signum: int, frame: object) -> None:
        self.stopping = True
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    def _wait_all(self) -> int:
        deadline = time.monotonic() + CHILD_STOP_TIMEOUT_S
        for child in self.children:
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        return 0


def _stop_with(parent: int):
    """Run in a new gateway process before it starts: SIGTERM when `parent` dies (Linux; elsewhere the
    process outlives a parent that is killed, as any child does)."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def stop_with_parent() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the request took effect
            os._exit(1)

    return stop_with_parent
