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
detaches. Exit codes: 0 succeeded, 1 failed (or an error talking to the gateway), 2 cancelled,
130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable
from typing import TextIO

from .output import StatusLine, print_jobs, print_json_events

DEFAULT_URL = "http://127.0.0.1:8000"
EXIT_CODES = {"succeeded": 0, "failed": 1, "cancelled": 2}
EXIT_INTERRUPTED = 130
GATEWAY_SHUTDOWN_GRACE_S = 5


def print_events(events: Iterable, out: TextIO, err: TextIO, separator: str | None = None,
                 status_line: StatusLine | None = None) -> str | None:
    """Write each token's text to `out` as it arrives, then a newline; return the job's final status
    (None if the events stopped before the `end` event).

    An `error` event's message goes to `err`. A `reset` (the job restarted on another attempt) is
    noted on `err`, and the new attempt's text starts on a new line of `out`. `status_line`, when
    given, is kept up to date after each event and erased before anything is printed.
    """
    status_line = status_line or StatusLine(err, enabled=False)
    end = separator or ""
    line_open = printed = False
    status = None
    status_line.show()
    for event in events:
        status_line.hide()
        if event.event == "token":
            print(event.data["text"], end=end, file=out, flush=True)
            line_open = printed = True
            status_line.printed(event.data["text"] + end)
            status_line.count(event.data.get("count", 1))
            status_line.show()
            continue
        if line_open and event.event in ("reset", "error"):
            print(file=out, flush=True)
            status_line.printed("\n")
            line_open = False
        if event.event == "reset":
            print(f"[job restarted: attempt {event.data.get('attempt')} ({event.data.get('reason', '')})]",
                  file=err, flush=True)
        elif event.event == "error":
            print(f"error: {event.data.get('message') or 'the job failed'} ({event.data.get('type', 'error')})",
                  file=err, flush=True)
        elif event.event == "end":
            status = event.data.get("status")
            break
        status_line.show()
    status_line.hide()
    if line_open or not printed:
        print(file=out, flush=True)
    return status


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


def _cmd_api(args: argparse.Namespace) -> int:
    from api.processes import default_workers, serve

    if _exposure_refused(args.host):
        return 1
    # Open streams would hold a graceful shutdown forever: cut them after a few seconds, and let
    # clients resume on another gateway with Last-Event-ID.
    return serve(args.workers or default_workers(), args.host, args.port, graceful_s=GATEWAY_SHUTDOWN_GRACE_S)


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


def _cmd_dev(args: argparse.Namespace) -> int:
    from .dev import run_dev

    if _exposure_refused(args.host):
        return 1
    return run_dev(host=args.host, port=args.port, workers=args.workers, api_workers=args.api_workers or len(os.sched_getaffinity(0)),
                   redis_url=args.redis_url or os.environ.get("TOKENRELAY_REDIS_URL") or None, demo=not args.no_demo)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    default_url = os.environ.get("TOKENRELAY_URL") or DEFAULT_URL
    parser = argparse.ArgumentParser(prog="tokenrelay", description="Run LLM jobs on Celery workers and stream "
                                     "their tokens to many clients over Server-Sent Events.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dev = commands.add_parser("dev", help="gateway + workers + embedded Valkey in one command",
                              description="Start an embedded Valkey server (unless --redis-url or "
                              "TOKENRELAY_REDIS_URL is given), Celery workers and the gateway; run a demo job; "
                              "serve until Ctrl-C.")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=8000)
    dev.add_argument("--workers", type=_positive_int, default=1, help="worker processes (default 1)")
    dev.add_argument("--api-workers", type=_positive_int, default=None,
                     help="gateway processes on the port (default: the number of cores)")
    dev.add_argument("--redis-url", help="use this Redis instead of an embedded server")
    dev.add_argument("--no-demo", action="store_true", help="do not submit the demo job")
    dev.set_defaults(handler=_cmd_dev)

    api = commands.add_parser("api", help="run the HTTP gateway (N processes on one port)")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    api.add_argument("--workers", type=_positive_int, default=None,
                     help="gateway processes on the port, each with its own relay (default: the number of cores)")
    api.set_defaults(handler=_cmd_api)

    worker = commands.add_parser("worker", help="run a Celery worker in this process")
    worker.add_argument("--concurrency", "-c", type=_positive_int, default=None,
                        help="threads (default: TOKENRELAY_WORKER_CONCURRENCY, 500)")
    worker.add_argument("--loglevel", "-l", default="info")
    worker.add_argument("--hostname", "-n", default=None, help="node name, e.g. worker1@%%h (default celery@%%h)")
    worker.set_defaults(handler=_cmd_worker)

    run = commands.add_parser("run", help="submit a job and print its tokens as they arrive")
    run.add_argument("prompt")
    run.add_argument("--model", default="demo")
    run.add_argument("--max-tokens", type=_positive_int, default=None)
    run.add_argument("--tokens-per-second", type=float, default=None, help="pace of the demo model")
    _add_stream_options(run, default_url)
    run.set_defaults(handler=_cmd_run)

    watch = commands.add_parser("watch", help="attach to a job's stream and print its tokens")
    watch.add_argument("job_id")
    watch.add_argument("--from", dest="last_event_id", metavar="EVENT_ID",
                       help="print only the events after this event id")
    _add_stream_options(watch, default_url)
    watch.set_defaults(handler=_cmd_watch)

    from .graph import add_graph_command

    add_graph_command(commands, default_url, _cmd_graph, _add_connection_options)
    jobs = commands.add_parser("jobs", help="list recent jobs, newest first")
    jobs.add_argument("--limit", type=_positive_int, default=20, help="how many (default 20, at most 200)")
    jobs.add_argument("--json", action="store_true", help="one JSON object per job")
    _add_connection_options(jobs, default_url)
    jobs.set_defaults(handler=_cmd_jobs)
    key = commands.add_parser("key", help="make a new API key and its TOKENRELAY_API_KEYS entry")
    key.add_argument("name", help="the key's name; jobs it creates belong to it")
    key.add_argument("--admin", action="store_true", help="may read and cancel every key's jobs")
    key.set_defaults(handler=_cmd_key)
    return parser


def _add_stream_options(parser: argparse.ArgumentParser, default_url: str) -> None:
    parser.add_argument("--separator", default=None, help="printed after each token event's text")
    parser.add_argument("--json", action="store_true",
                        help="print every event as one JSON object per line ({id, event, data}), for scripts")
    _add_connection_options(parser, default_url)


def _add_connection_options(parser: argparse.ArgumentParser, default_url: str) -> None:
    parser.add_argument("--url", default=default_url, help=f"the gateway (default: $TOKENRELAY_URL or {DEFAULT_URL})")
    parser.add_argument("--api-key", default=os.environ.get("TOKENRELAY_API_KEY") or None,
                        help="sent as Authorization: Bearer (default: $TOKENRELAY_API_KEY)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except BrokenPipeError:
        # The reader of our output went away (e.g. `| head`): stop quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
