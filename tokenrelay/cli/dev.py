"""`tokenrelay dev`: the whole product on one machine, in one command.

`DevStack` supervises an embedded Valkey server (unless a Redis URL is given), N Celery worker
processes and one gateway process. Each child runs in its own session, so a Ctrl-C in the
terminal reaches only this supervisor, which then stops them in order: gateway, workers, server.
Their output goes to log files, so the terminal shows the demo job's tokens cleanly.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import tempfile
import threading
from pathlib import Path

from .banner import banner, model_warning
from .embedded import EmbeddedServer
from .supervisor import STOP_TIMEOUT_S, Child, ChildExited, HttpProbe, NotReady, stop_all, tail, wait_ready

READY_TIMEOUT_S = 60.0
# Where `-A worker` and `api.app` import from, whether installed editable or not.
PACKAGE_ROOT = Path(__file__).resolve().parent.parent

DEMO_PROMPT = "Tell me about tokenrelay"
DEMO_PARAMS = {"tokens_per_second": 30, "max_tokens": 64}


class DevError(RuntimeError):
    """Raised when the stack cannot start or a part of it stops on its own."""


def _port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _client_url(host: str, port: int) -> str:
    """The URL to reach a server bound to `host` (a wildcard address is reached on loopback)."""
    connect = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://[{connect}]:{port}" if ":" in connect else f"http://{connect}:{port}"


def _check_redis(url: str) -> None:
    """The URL names a topology we can use, with a broker, and Redis answers there; else one clear line."""
    from ..core.connections import BrokerUrlMissing, RedisUrlError, celery_broker, parse_redis_url, redact, sync_client

    try:
        target = parse_redis_url(url)
        celery_broker(url, os.environ.get("TOKENRELAY_BROKER_URL") or None)
    except (RedisUrlError, BrokerUrlMissing) as exc:
        raise DevError(str(exc)) from None
    client = sync_client(target)
    try:
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure: say which URL and why
        raise DevError(f"cannot reach Redis at {redact(url)}: {exc}") from None
    finally:
        client.close()


class DevStack:
    """`start()` brings everything up and waits until the gateway sees the workers; `stop()` tears it down."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
                 redis_url: str | None = None, api_workers: int = 1) -> None:
        self.host, self.port, self.worker_count = host, port, workers
        self.api_workers = api_workers
        self.external_redis_url = redis_url
        self.url = _client_url(host, port)
        self.server: EmbeddedServer | None = None
        self.log_dir: Path | None = None
        self.gateway: Child | None = None
        self.workers: list[Child] = []
        self.hurry = threading.Event()  # set on a second Ctrl-C: no more waiting for graceful exits

    @property
    def redis_url(self) -> str:
        return self.server.url if self.server else self.external_redis_url

    @property
    def started(self) -> bool:
        return bool(self.server or self.workers or self.gateway)

    @property
    def children(self) -> list[Child]:
        return [*self.workers, *([self.gateway] if self.gateway else [])]

    def start(self, stop_requested: threading.Event) -> None:
        if not _port_free(self.host, self.port):
            raise DevError(f"port {self.port} on {self.host} is already in use; choose another with --port")
        if self.external_redis_url:
            _check_redis(self.external_redis_url)
        else:
            self.server = EmbeddedServer()  # kept before start(): stop() cleans up a failed start too
            self.server.start()
        self.log_dir = Path(tempfile.mkdtemp(prefix="tokenrelay-dev-"))
        env = {**os.environ, "TOKENRELAY_REDIS_URL": self.redis_url, "PYTHONUNBUFFERED": "1"}
        for number in range(1, self.worker_count + 1):
            args = [sys.executable, "-m", "celery", "-A", "worker", "worker", "--pool", "threads", "-l", "info",
                    "-n", f"dev{number}@%h", "--without-mingle", "--without-gossip"]
            log_path = self.log_dir / f"worker-{number}.log"
            self.workers.append(Child(f"worker {number}", args, env=env, log_path=log_path, cwd=PACKAGE_ROOT))
        args = [sys.executable, "-m", "api.server", "--workers", str(self.api_workers), "--host", self.host,
                "--port", str(self.port), "--timeout-graceful-shutdown", "2"]
        self.gateway = Child("gateway", args, env=env, log_path=self.log_dir / "gateway.log", cwd=PACKAGE_ROOT)
        self._wait_until_ready(stop_requested)

    def _wait_until_ready(self, stop_requested: threading.Event) -> None:
        probe = HttpProbe(f"{self.url}/ready", lambda r: r.status_code == 200
                          and r.json().get("workers", 0) >= self.worker_count)

        def ready() -> bool:
            self._check_server()
            return probe()

        try:
            wait_ready(ready, what="the stack", timeout_s=READY_TIMEOUT_S, watch=self.children, stop=stop_requested)
        except NotReady:
            raise DevError(f"not ready after {READY_TIMEOUT_S:.0f} s (last /ready: {probe.last}); "
                           f"see the logs in {self.log_dir}") from None

    def check(self) -> None:
        """Raise ChildExited, with the tail of its log, if any part has stopped."""
        for child in self.children:
            if not child.alive():
                raise ChildExited(child)
        self._check_server()

    def _check_server(self) -> None:
        if self.server and self.server.process and self.server.process.poll() is not None:
            log_path = Path(self.server.directory) / "server.log"
            raise DevError(f"the embedded Redis server exited unexpectedly "
                           f"(code {self.server.process.returncode}); last lines of {log_path}:\n{tail(log_path)}")

    def stop(self) -> None:
        """Gateway first (no new jobs), then the workers, then the embedded server. Safe to call twice."""
        if self.gateway:
            stop_all([self.gateway], STOP_TIMEOUT_S, hurry=self.hurry)
        note = f"Waiting up to {STOP_TIMEOUT_S:.0f} s for running jobs to finish (Ctrl-C again to stop now) ..."
        stop_all(self.workers, STOP_TIMEOUT_S, hurry=self.hurry, slow_note=lambda: _note(note))
        if self.server:
            self.server.stop()


class Demo:
    """The demo job, streamed to stdout from a thread so the supervisor keeps watching its children."""

    def __init__(self, url: str) -> None:
        from ..client import Client

        self.client = Client(url)
        self.stopping = False
        self.mid_line = False  # tokens printed, the closing newline not yet
        self.thread = threading.Thread(target=self._run, name="tokenrelay-demo", daemon=True)

    def start(self) -> "Demo":
        self.thread.start()
        return self

    def _run(self) -> None:
        from .output import print_events

        try:
            job = self.client.submit(DEMO_PROMPT, model="demo", params=DEMO_PARAMS)
            _note(f"Demo job {job['id']}: {DEMO_PROMPT!r}")
            self.mid_line = True
            status = print_events(self.client.stream(job["id"]), sys.stdout, sys.stderr)
            self.mid_line = False
            _note(f"Demo job {status}. Serving until Ctrl-C.")
        except Exception as exc:  # noqa: BLE001 - the demo is a courtesy: report, keep serving
            if not self.stopping:
                _note(f"Demo job not run: {getattr(exc, 'message', None) or exc}. Serving until Ctrl-C.")

    def stop(self) -> None:
        """Close the demo's connections (its stream would hold up the gateway's shutdown)."""
        self.stopping = True
        try:
            self.client.close()
        except Exception:  # noqa: BLE001 - closing under a reading thread; it stops either way
            pass
        self.thread.join(2.0)
        if self.mid_line:
            _note("", sys.stdout)


def _note(text: str, stream=None) -> None:
    """Print to stderr (or `stream`); a closed terminal (SIGHUP) must not stop the shutdown."""
    try:
        print(text, file=stream or sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def run_dev(*, host: str, port: int, workers: int, redis_url: str | None, demo: bool, api_workers: int = 1) -> int:
    """Start everything, run the demo, serve until SIGINT/SIGTERM/SIGHUP; 0 on a requested stop."""
    stop_requested = threading.Event()
    stack = DevStack(host=host, port=port, workers=workers, redis_url=redis_url, api_workers=api_workers)

    def on_signal(signum: int, frame: object) -> None:
        if stop_requested.is_set():
            stack.hurry.set()
        stop_requested.set()

    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, on_signal) for sig in handled}
    demo_job: Demo | None = None
    code = 0
    try:
        _note("Starting tokenrelay dev ...")
        stack.start(stop_requested)
        if not stop_requested.is_set():
            _note(banner(stack, model_warning()))
            if demo:
                demo_job = Demo(stack.url).start()
        while not stop_requested.wait(0.25):
            stack.check()
    except (RuntimeError, OSError) as exc:  # DevError, SupervisorError, or the server could not start
        _note(f"tokenrelay dev: {exc}")
        code = 1
    finally:
        if stack.started:
            _note("Stopping tokenrelay dev ...")
        try:
            if demo_job:
                demo_job.stop()
        finally:
            stack.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if stack.started:
            _note(f"Stopped. Logs are in {stack.log_dir}" if stack.log_dir else "Stopped.")
    return code
