"""The processes a benchmark run starts (servers, workers, gateways), and what /proc says about them."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from tokenrelay.cli.embedded import EmbeddedServer, free_port
from tokenrelay.cli.supervisor import Child, HttpProbe, wait_ready

ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
LOG_DIR = Path(tempfile.gettempdir()) / "tokenrelay-bench-logs"


class Proc(Child):
    """A process of the benchmark, run from the project's root, its output in LOG_DIR/<name>.log."""

    def __init__(self, name: str, args: list[str], env: dict[str, str]) -> None:
        super().__init__(name, args, env=env, log_path=LOG_DIR / f"{name}.log", cwd=ROOT)


def children_of(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def tcp_connections_to(pid: int, port: int) -> int:
    """Established TCP connections of process `pid` whose remote port is `port`."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            parts = line.split()
            remote_port = int(parts[2].rsplit(":", 1)[1], 16)
            if remote_port == port and parts[3] == "01" and parts[9] in inodes:
                count += 1
    return count


def wait_http(url: str, timeout_s: float = 30.0, check=lambda r: r.status_code == 200,
              watch: list[Proc] | None = None) -> None:
    wait_ready(HttpProbe(url, check), what=url, timeout_s=timeout_s, watch=watch or ())


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _uvicorn(target: str, port: int) -> list[str]:
    return [sys.executable, "-m", "uvicorn", "--factory", target, "--host", "127.0.0.1", "--port", str(port),
            "--log-level", "warning", "--no-access-log", "--backlog", "16384"]


class Implementation:
    """One side of the comparison: its processes, where to reach it, and who to bill CPU to."""

    name = ""
    port = 0
    processes: list[Proc]
    redis: EmbeddedServer | None = None

    def gateway_pids(self) -> list[int]:
        """The gateway and, when it runs several processes on its port, each of them."""
        return [self.gateway.pid, *children_of(self.gateway.pid)]

    def gateway_cpu(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.gateway_pids())

    def pids(self) -> list[int]:
        pids = [p.pid for p in self.processes] + children_of(self.gateway.pid)
        if self.redis is not None and self.redis.process is not None:
            pids.append(self.redis.process.pid)
        return pids

    def cpu(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids())

    def stop(self) -> None:
        for process in self.processes:
            process.stop()
        if self.redis is not None:
            self.redis.stop()


class TokenRelay(Implementation):
    name = "tokenrelay"

    def __init__(self, workers: int, concurrency: int, gateway_processes: int = 1, **settings: str) -> None:
        """`settings`: more TOKENRELAY_* variables, by their lowercase setting names."""
        self.redis = EmbeddedServer(extra_args=["--maxclients", "20000"]).start()
        # One load generator plays every client: per-key quotas sized for it, not for one user.
        env = _env(TOKENRELAY_REDIS_URL=self.redis.url, TOKENRELAY_EVENT_TIMESTAMPS="1",
                   TOKENRELAY_WORKER_CONCURRENCY=str(concurrency), TOKENRELAY_MAX_TOKENS_LIMIT="100000",
                   TOKENRELAY_MAX_ACTIVE_JOBS_PER_KEY="100000", TOKENRELAY_RATE_LIMIT_PER_MINUTE="10000000",
                   TOKENRELAY_MAX_READERS_PER_JOB="100000",
                   **{f"TOKENRELAY_{name.upper()}": str(value) for name, value in settings.items()})
        self.port = free_port()
        self.metrics_ports = [free_port() for _ in range(workers)]  # each worker's Prometheus metrics
        self.processes = [
            Proc(f"tokenrelay-worker{i}", [sys.executable, "-m", "celery", "-A", "worker", "worker", "-l", "warning",
                                           "-n", f"bench{i}@%h", "--without-mingle", "--without-gossip"],
                 {**env, "TOKENRELAY_WORKER_METRICS_PORT": str(self.metrics_ports[i])})
            for i in range(workers)
        ]
        # As `tokenrelay api --workers N` runs it: N processes on one port (SO_REUSEPORT).
        self.gateway_processes = gateway_processes
        self.gateway = Proc("tokenrelay-gateway", [sys.executable, "-m", "api.server", "--workers",
                                                   str(gateway_processes), "--port", str(self.port),
                                                   "--log-level", "warning", "--no-access-log"], env)
        self.processes.append(self.gateway)
        wait_http(f"http://127.0.0.1:{self.port}/ready", 60,
                  lambda r: r.status_code == 200 and r.json()["workers"] >= workers, self.processes)


class Direct(Implementation):
    name = "direct"

    def __init__(self) -> None:
        self.port = free_port()
        self.gateway = Proc("direct", _uvicorn("bench.direct_app:create_app", self.port), _env())
        self.processes = [self.gateway]
        wait_http(f"http://127.0.0.1:{self.port}/docs", 60, watch=self.processes)


LANGGRAPH_VENV = ROOT / ".venv-langgraph"  # `make bench` makes it: langgraph-api pins what the test extra cannot use


class LangGraphDev(Implementation):
    """LangGraph's dev server (in-memory runtime) serving bench/langgraph_app, from its own virtualenv."""

    name = "langgraph"

    def __init__(self) -> None:
        command = LANGGRAPH_VENV / "bin" / "langgraph"
        if not command.exists():
            raise RuntimeError(f"{command} is missing: make bench installs langgraph-cli[inmem] there")
        self.port = free_port()
        env = _env(LANGSMITH_TRACING="false", LANGCHAIN_TRACING_V2="false", LANGGRAPH_CLI_NO_ANALYTICS="1")
        self.gateway = Proc("langgraph-dev", [str(command), "dev", "--config", "bench/langgraph_app/langgraph.json",
                                              "--host", "127.0.0.1", "--port", str(self.port), "--no-browser",
                                              "--no-reload"], env)
        self.processes = [self.gateway]
        wait_http(f"http://127.0.0.1:{self.port}/ok", 120, watch=self.processes)


class Naive(Implementation):
    name = "naive"

    def __init__(self, workers: int, concurrency: int, **settings: str) -> None:
        """`settings`: more TOKENRELAY_* variables, by their lowercase setting names."""
        self.redis = EmbeddedServer(extra_args=["--maxclients", "20000"]).start()
        env = _env(NAIVE_REDIS_URL=self.redis.url)
        self.port = free_port()
        self.processes = [
            Proc(f"naive-worker{i}", [sys.executable, "-m", "celery", "-A", "bench.naive", "worker", "-l", "warning",
                                      "--pool", "threads", "-c", str(concurrency), "-n", f"naive{i}@%h",
                                      "--without-mingle", "--without-gossip"], env)
            for i in range(workers)
        ]
        self.gateway = Proc("naive-gateway", _uvicorn("bench.naive:create_gateway", self.port), env)
        self.processes.append(self.gateway)
        wait_http(f"http://127.0.0.1:{self.port}/docs", 60, watch=self.processes)
        time.sleep(2)  # the workers have no readiness endpoint; give them time to consume
