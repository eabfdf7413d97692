"""Serving the gateway from N processes on one port (`tokenrelay api --workers N`).

`python -m api.processes --host H --port P --workers N`, settings from the environment.

Deliberate choices:
- Each process binds its own listening socket with SO_REUSEPORT, so the kernel spreads new
  connections evenly over the processes (one shared accept socket lets whichever process wakes
  first take a whole burst). Each process is a complete gateway: its own relay, Redis pool and
  broker connection. They share nothing, so readers of one job on different processes each get
  the job's stream from Redis, by id, and see the same sequence.
- The parent only supervises: it forwards SIGTERM/SIGINT, and starts a process again when one
  dies, so a crash costs its own connections only (clients resume with Last-Event-ID).
- One process (`--workers 1`) serves in the parent itself, without SO_REUSEPORT.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time

import uvicorn

RESTART_DELAY_S = 1.0
POLL_S = 0.2
CHILD_STOP_TIMEOUT_S = 30.0
BACKLOG = 4096  # pending connections per process: a burst of clients waits instead of being refused


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def listening_socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def serve_one(host: str, port: int, *, reuse_port: bool, log_level: str, graceful_s: float,
              access_log: bool = True) -> None:
    """One gateway process: the app from the environment, on its own socket."""
    from .app import app_from_env

    sock = listening_socket(host, port, reuse_port=reuse_port)
    # log_config=None: the app configures logging (tokenrelay.core.logs), uvicorn's included.
    config = uvicorn.Config(app_from_env(), log_level=log_level, timeout_graceful_shutdown=graceful_s,
                            backlog=BACKLOG, log_config=None, access_log=access_log)
    uvicorn.Server(config).run(sockets=[sock])


class Gateways:
    """N child processes serving one port; a child that dies is started again."""

    def __init__(self, count: int, host: str, port: int, child_args: list[str]) -> None:
        self.count, self.host, self.port = count, host, port
        self.args = [sys.executable, "-m", "api.processes", "--host", host, "--port", str(port),
                     "--reuse-port", *child_args]
        self.children: list[subprocess.Popen] = []
        self.stopping = False

    def _start_one(self) -> subprocess.Popen:
        return subprocess.Popen(self.args)

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


def serve(workers: int, host: str, port: int, *, log_level: str = "info", graceful_s: float = 5.0,
          access_log: bool = True) -> int:
    if workers <= 1:
        serve_one(host, port, reuse_port=False, log_level=log_level, graceful_s=graceful_s, access_log=access_log)
        return 0
    child_args = ["--log-level", log_level, "--timeout-graceful-shutdown", str(graceful_s),
                  *([] if access_log else ["--no-access-log"])]
    return Gateways(workers, host, port, child_args).run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m api.processes", description="the tokenrelay gateway")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=default_workers(),
                        help="gateway processes on this port (default: the number of cores)")
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--timeout-graceful-shutdown", type=float, default=5.0)
    parser.add_argument("--no-access-log", dest="access_log", action="store_false")
    parser.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)  # one of N children
    args = parser.parse_args(argv)
    if args.reuse_port:
        serve_one(args.host, args.port, reuse_port=True, log_level=args.log_level,
                  graceful_s=args.timeout_graceful_shutdown, access_log=args.access_log)
        return 0
    return serve(args.workers, args.host, args.port, log_level=args.log_level,
                 graceful_s=args.timeout_graceful_shutdown, access_log=args.access_log)


if __name__ == "__main__":
    sys.exit(main())
