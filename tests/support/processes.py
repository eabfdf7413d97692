"""Real processes for end-to-end tests: Celery workers and uvicorn gateways, started from the project's files."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from tokenrelay.cli.embedded import free_port
from tokenrelay.cli.supervisor import Child, HttpProbe, wait_ready

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


class Process(Child):
    """A child of a test, run from the project's root, its output in a file of its own under LOG_DIR."""

    def __init__(self, name: str, args: list[str], env: dict[str, str]) -> None:
        log_path = LOG_DIR / f"{name}-{os.getpid()}-{time.monotonic_ns()}.log"
        super().__init__(name, args, env=env, log_path=log_path, cwd=ROOT)


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
    args = [sys.executable, "-m", "api.server", "--workers", "1", "--host", "127.0.0.1", "--port", str(port),
            "--log-level", "warning"]
    process = Process("gateway", args, env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(HttpProbe(f"{url}/health", timeout_s=0.5), what="gateway /health", timeout_s=20, watch=[process],
                   interval_s=0.02)
    except BaseException:
        process.stop()
        raise
    return process, url


def wait_for_workers(url: str, count: int, timeout_s: float = 30.0) -> None:
    probe = HttpProbe(f"{url}/ready", lambda r: r.status_code == 200 and r.json()["workers"] >= count)
    wait_ready(probe, what=f"{count} worker(s) alive", timeout_s=timeout_s)


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
