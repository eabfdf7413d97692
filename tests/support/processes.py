"""Real processes for end-to-end tests: Celery workers and uvicorn gateways, started from the project's files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tokenrelay.cli.embedded import free_port

ROOT = Path(__file__).resolve().parents[2]
LOG_DIR = Path(os.environ.get("TOKENRELAY_TEST_LOGS", "/tmp/tokenrelay-test-logs"))


def wait_until(condition, timeout_s: float = 10.0, interval_s: float = 0.02, message: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {message}")


class Process:
    """A child process in its own session, with its output in a log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str]) -> None:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.log_path = LOG_DIR / f"{name}-{os.getpid()}-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(args, env=env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
                                        start_new_session=True)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.process.pid, sig)

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.alive():
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")


def stack_env(redis_url: str, **settings: object) -> dict[str, str]:
    env = dict(os.environ)
    env["TOKENRELAY_REDIS_URL"] = redis_url
    env.pop("TOKENRELAY_BROKER_URL", None)
    for name, value in settings.items():
        env[f"TOKENRELAY_{name.upper()}"] = str(value)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_worker(env: dict[str, str], concurrency: int = 50, name: str = "worker") -> Process:
    hostname = f"{name}-{time.monotonic_ns()}@%h"
    args = [sys.executable, "-m", "celery", "-A", "worker", "worker", "--pool", "threads", "-c", str(concurrency),
            "-l", "info", "-n", hostname, "--without-mingle", "--without-gossip"]
    return Process(name, args, env)


def start_gateway(env: dict[str, str], port: int | None = None) -> tuple[Process, str]:
    port = port or free_port()
    args = [sys.executable, "-m", "api.server", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    process = Process("gateway", args, env)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if not process.alive():
            raise AssertionError(f"gateway exited:\n{process.output()}")
        try:
            return httpx.get(f"{url}/health", timeout=0.5).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(up, timeout_s=20, message="gateway /health")
    return process, url


def wait_for_workers(url: str, count: int, timeout_s: float = 30.0) -> None:
    def ready() -> bool:
        try:
            response = httpx.get(f"{url}/ready", timeout=1)
        except httpx.TransportError:
            return False
        return response.status_code == 200 and response.json()["workers"] >= count

    wait_until(ready, timeout_s=timeout_s, interval_s=0.1, message=f"{count} worker(s) alive")


class Stack:
    """A gateway and workers of a test's own (own key prefix and queue) on a shared Redis server."""

    def __init__(self, redis_url: str, settings: dict[str, object], workers: int = 1, concurrency: int = 50) -> None:
        self.env = stack_env(redis_url, **settings)
        self.workers = [start_worker(self.env, concurrency, name=f"worker{i}") for i in range(workers)]
        self.gateways: list[Process] = []
        self.urls: list[str] = []
        try:
            self.add_gateway()
            wait_for_workers(self.url, workers)
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return self.urls[0]

    def add_gateway(self) -> str:
        process, url = start_gateway(self.env)
        self.gateways.append(process)
        self.urls.append(url)
        return url

    def add_worker(self) -> Process:
        process = start_worker(self.env, name=f"worker{len(self.workers)}")
        self.workers.append(process)
        return process

    def stop(self) -> None:
        for process in self.gateways + self.workers:
            process.stop()

    def __enter__(self) -> "Stack":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
