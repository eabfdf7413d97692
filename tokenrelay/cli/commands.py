"""The `tokenrelay` command: parse arguments and dispatch to one subcommand.

    tokenrelay dev      gateway + workers + embedded Valkey, one command (see tokenrelay.cli.dev)
    tokenrelay api      the HTTP gateway in this process
    tokenrelay worker   a Celery worker in this process
    tokenrelay run      submit a job and print its tokens as they arrive
    tokenrelay watch    attach to a job's stream and print its tokens
    tokenrelay graph    run a registered LangGraph graph and print what it streams
    tokenrelay jobs     list recent jobs
    tokenrelay key      make a new API key and its TOKENRELAY_API_KEYS entry

`run` and `watch` print tokens on stdout and everything else on stderr (`run` starts with
`job <id>`, for a later `watch`). On a terminal, a status line (tokens, tokens/s, elapsed) follows
the text on stderr and is erased at the end; piped output gets nothing extra. `--json` prints
every event as a JSON line instead. Ctrl-C during `run` cancels the job; during `watch` it only
detaches. Exit codes: 0 succeeded, 1 failed (or an error talking to the gateway), 2 usage error
(argparse's), 3 cancelled (by someone else), 130 interrupted (Ctrl-C).

`dev`, `api`, `worker` and `key` need the `server` extra; without it they say so and exit 1.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import os
import sys

from .output import StatusLine, print_events, print_jobs, print_json_events
from .parser import build_parser

EXIT_FAILED = 1
EXIT_CANCELLED = 3  # 2 is argparse's usage error
EXIT_CODES = {"succeeded": 0, "failed": EXIT_FAILED, "cancelled": EXIT_CANCELLED}
EXIT_INTERRUPTED = 130
GATEWAY_SHUTDOWN_GRACE_S = 5
# Top-level modules each server command imports, all from the `server` extra.
SERVER_MODULES = {
    "dev": ("celery", "redis", "fastapi", "uvicorn", "pydantic_settings"),
    "api": ("redis", "fastapi", "uvicorn", "pydantic_settings", "celery"),
    "worker": ("celery", "redis", "pydantic_settings", "langchain_core", "langgraph"),
    "key": ("starlette",),
}


def _exit_code(job_id: str, status: str | None) -> int:
    if status is None:
        print("error: the stream ended without an end event", file=sys.stderr)
        return 1
    if status != "succeeded":
        print(f"job {job_id} {status}", file=sys.stderr)
    return EXIT_CODES.get(status, 1)


def _follow(client, job_id: str, last_event_id: str | None, args: argparse.Namespace) -> int:
    events = client.stream(job_id, last_event_id=last_event_id)
    if args.json:
        status = print_json_events(events, sys.stdout)
    else:
        status = print_events(events, sys.stdout, sys.stderr, args.separator, StatusLine.for_terminal(sys.stderr, sys.stdout))
    return _exit_code(job_id, status)


def _with_client(args: argparse.Namespace, action, on_interrupt=None) -> int:
    """Run `action(client)`; a gateway error, an unreachable gateway or Ctrl-C become an exit code."""
    import httpx

    from ..client import Client
    from ..errors import ClientError

    with Client(args.url, api_key=args.api_key) as client:
        try:
            return action(client)
        except ClientError as exc:
            return _client_failed(exc)
        except httpx.HTTPError as exc:
            return _unreachable(exc, args.url)
        except KeyboardInterrupt:
            print(file=sys.stdout, flush=True)
            if on_interrupt is not None:
                on_interrupt(client)
            return EXIT_INTERRUPTED


def _cmd_run(args: argparse.Namespace) -> int:
    params = {name: value for name, value in (("max_tokens", args.max_tokens),
                                              ("tokens_per_second", args.tokens_per_second)) if value is not None}
    submitted: list[str] = []

    def run(client) -> int:
        submitted.append(client.submit(args.prompt, model=args.model, params=params)["id"])
        print(f"job {submitted[0]}", file=sys.stderr, flush=True)
        return _follow(client, submitted[0], None, args)

    def cancel(client) -> None:  # Ctrl-C during `run` cancels the job it started
        if submitted:
            _cancel_quietly(client, submitted[0])

    return _with_client(args, run, cancel)


def _cmd_watch(args: argparse.Namespace) -> int:
    return _with_client(args, lambda client: _follow(client, args.job_id, args.last_event_id, args))


def _cmd_graph(args: argparse.Namespace) -> int:
    from .graph import run_graph

    return _with_client(args, lambda client: _exit_code(*run_graph(args, client)))


def _cmd_jobs(args: argparse.Namespace) -> int:
    def show(client) -> int:
        print_jobs(client.list_jobs(limit=args.limit), sys.stdout, args.json)
        return 0

    return _with_client(args, show)


def _client_failed(exc: Exception) -> int:
    print(f"error: {getattr(exc, 'message', None) or exc}", file=sys.stderr)
    return 1


def _unreachable(exc: Exception, url: str) -> int:
    print(f"error: cannot reach the gateway at {url} ({type(exc).__name__}: {exc})", file=sys.stderr)
    return 1


def _cancel_quietly(client, job_id: str) -> None:
    print(f"interrupted: cancelling job {job_id}", file=sys.stderr)
    try:
        client.cancel(job_id)
    except Exception as exc:  # noqa: BLE001 - best effort on the way out
        print(f"could not cancel job {job_id}: {exc}", file=sys.stderr)


def _needs_server(command: str):
    """Say which extra to install, instead of a traceback, when the server's packages are missing."""
    def decorate(handler):
        @functools.wraps(handler)
        def run(args: argparse.Namespace) -> int:
            missing = [name for name in SERVER_MODULES[command] if not _importable(name)]
            if missing:
                print(f"tokenrelay {command} needs the server extra, which is not installed (missing: "
                      f"{', '.join(missing)}). Install it with: pip install 'tokenrelay[server]'", file=sys.stderr)
                return EXIT_FAILED
            return handler(args)
        return run
    return decorate


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None  # finds, without importing
    except (ImportError, ValueError):
        return False


LOOPBACK_HOSTS = ("localhost", "::1")


def _is_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def _exposure_refused(host: str) -> bool:
    """Without API keys the gateway is open to anyone who reaches it: loopback only, said out loud."""
    from ..core.settings import load_settings

    if load_settings().api_keys:
        return False
    if not _is_loopback(host):
        print(f"refusing to listen on {host} without API keys: anyone reaching it could use it. Set "
              "TOKENRELAY_API_KEYS (make one with `tokenrelay key`) or use --host 127.0.0.1", file=sys.stderr)
        return True
    print(f"no API keys configured: authentication is off, listening on loopback ({host}) only", file=sys.stderr)
    return False


@_needs_server("key")
def _cmd_key(args: argparse.Namespace) -> int:
    from api.auth import KEY_NAME, hash_key, new_key

    if not KEY_NAME.fullmatch(args.name):
        print("a key name is 1-64 letters, digits, '_', '.' or '-'", file=sys.stderr)
        return 1
    key = new_key()
    entry = f"{args.name}:{hash_key(key)}" + (":admin" if args.admin else "")
    print(f"key (give it to the client; it is not stored): {key}")
    print(f"TOKENRELAY_API_KEYS entry (comma-separate several): {entry}")
    return 0


@_needs_server("api")
def _cmd_api(args: argparse.Namespace) -> int:
    from api.server import main as serve_gateway

    if _exposure_refused(args.host):
        return 1
    # Open streams would hold a graceful shutdown forever: cut them after a few seconds, and let
    # clients resume on another gateway with Last-Event-ID.
    return serve_gateway(["--host", args.host, "--port", str(args.port), "--workers", str(args.workers or 0),
                          "--timeout-graceful-shutdown", str(GATEWAY_SHUTDOWN_GRACE_S)])


@_needs_server("worker")
def _cmd_worker(args: argparse.Namespace) -> int:
    from worker import create_worker_app

    from ..core.settings import load_settings

    settings = load_settings()
    concurrency = args.concurrency if args.concurrency is not None else settings.worker_concurrency
    app = create_worker_app(settings)
    argv = ["worker", "--pool", "threads", "-c", str(concurrency), "-l", args.loglevel]
    if args.hostname:
        argv += ["-n", args.hostname]
    app.worker_main(argv)
    return 0


@_needs_server("dev")
def _cmd_dev(args: argparse.Namespace) -> int:
    from .dev import run_dev

    if _exposure_refused(args.host):
        return 1
    return run_dev(host=args.host, port=args.port, workers=args.workers,
                   api_workers=args.api_workers or len(os.sched_getaffinity(0)),
                   redis_url=args.redis_url or os.environ.get("TOKENRELAY_REDIS_URL") or None, demo=not args.no_demo)


HANDLERS = {"dev": _cmd_dev, "api": _cmd_api, "worker": _cmd_worker, "run": _cmd_run, "watch": _cmd_watch,
            "graph": _cmd_graph, "jobs": _cmd_jobs, "key": _cmd_key}


def main(argv: list[str] | None = None) -> int:
    args = build_parser(HANDLERS).parse_args(argv)
    try:
        return args.handler(args)
    except BrokenPipeError:
        # The reader of our output went away (e.g. `| head`): stop quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
