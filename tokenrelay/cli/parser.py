"""The `tokenrelay` command line: every command, option, help text and default, and the value checks.

Handlers are passed in by name (see `commands.py`), so this module imports nothing of the server.
"""

from __future__ import annotations

import argparse
import functools
import os
from collections.abc import Callable

from .. import __version__
from .graph import add_graph_command
from .values import non_negative_float, port, positive_int

DEFAULT_URL = "http://127.0.0.1:8000"
EPILOG = ("exit codes: 0 succeeded, 1 failed (or the gateway refused or could not be reached), "
          "2 usage error, 3 cancelled (by someone else), 130 interrupted (Ctrl-C)")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends `(default: X)` to an option's help, unless it has no default worth showing or says it itself."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, argparse.SUPPRESS) or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def build_parser(handlers: dict[str, Callable[[argparse.Namespace], int]]) -> argparse.ArgumentParser:
    default_url = os.environ.get("TOKENRELAY_URL") or DEFAULT_URL
    parser = argparse.ArgumentParser(prog="tokenrelay", description="Run LLM jobs on Celery workers and stream "
                                     "their tokens to many clients over Server-Sent Events.", epilog=EPILOG,
                                     formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     parser_class=functools.partial(argparse.ArgumentParser,
                                                                    formatter_class=HelpFormatter))

    dev = commands.add_parser("dev", help="gateway + workers + embedded Valkey in one command (server extra)",
                              description="Start an embedded Valkey server (unless --redis-url or "
                              "TOKENRELAY_REDIS_URL is given), Celery workers and the gateway; run a demo job; "
                              "serve until Ctrl-C.")
    _add_listen_options(dev)
    dev.add_argument("--workers", type=positive_int, default=1, help="worker processes")
    dev.add_argument("--api-workers", type=positive_int, default=None,
                     help="gateway processes on the port (default: the number of cores)")
    dev.add_argument("--redis-url", help="use this Redis instead of an embedded server "
                     "(default: $TOKENRELAY_REDIS_URL, else an embedded Valkey)")
    dev.add_argument("--no-demo", action="store_true", help="do not submit the demo job")
    dev.set_defaults(handler=handlers["dev"])

    api = commands.add_parser("api", help="run the HTTP gateway, N processes on one port (server extra)")
    _add_listen_options(api)
    api.add_argument("--workers", type=positive_int, default=None,
                     help="gateway processes on the port, each with its own relay (default: the number of cores)")
    api.set_defaults(handler=handlers["api"])

    worker = commands.add_parser("worker", help="run a Celery worker in this process (server extra)")
    worker.add_argument("--concurrency", "-c", type=positive_int, default=None,
                        help="threads, i.e. jobs at once (default: $TOKENRELAY_WORKER_CONCURRENCY, else 500)")
    worker.add_argument("--loglevel", "-l", default="info", help="Celery's log level")
    worker.add_argument("--hostname", "-n", default=None, help="node name, e.g. worker1@%%h (default: celery@%%h)")
    worker.set_defaults(handler=handlers["worker"])

    run = commands.add_parser("run", help="submit a job and print its tokens as they arrive", epilog=EPILOG)
    run.add_argument("prompt", help="the prompt, sent as one user message")
    run.add_argument("--model", default="demo", help="a model the gateway lists (GET /v1/models)")
    run.add_argument("--max-tokens", type=positive_int, default=None,
                     help="tokens to generate (default: the server's, 64 unless configured)")
    run.add_argument("--tokens-per-second", type=non_negative_float, default=None,
                     help="pace of the demo model, 0 = as fast as possible (default: 30)")
    _add_stream_options(run, default_url)
    run.set_defaults(handler=handlers["run"])

    watch = commands.add_parser("watch", help="attach to a job's stream and print its tokens", epilog=EPILOG)
    watch.add_argument("job_id", help="the job's id (printed by `run`, listed by `jobs`)")
    watch.add_argument("--from", dest="last_event_id", metavar="EVENT_ID",
                       help="print only the events after this event id (default: from the start)")
    _add_stream_options(watch, default_url)
    watch.set_defaults(handler=handlers["watch"])

    add_graph_command(commands, default_url, handlers["graph"], _add_connection_options)

    jobs = commands.add_parser("jobs", help="list recent jobs, newest first")
    jobs.add_argument("--limit", type=positive_int, default=20, help="how many, at most 200")
    jobs.add_argument("--json", action="store_true", help="one JSON object per job")
    _add_connection_options(jobs, default_url)
    jobs.set_defaults(handler=handlers["jobs"])

    key = commands.add_parser("key", help="make a new API key and its TOKENRELAY_API_KEYS entry (server extra)")
    key.add_argument("name", help="the key's name; jobs it creates belong to it")
    key.add_argument("--admin", action="store_true", help="may read and cancel every key's jobs")
    key.set_defaults(handler=handlers["key"])
    return parser


def _add_listen_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (another needs API keys)")
    parser.add_argument("--port", type=port, default=8000, help="the gateway's port")


def _add_stream_options(parser: argparse.ArgumentParser, default_url: str) -> None:
    parser.add_argument("--separator", default=None, help="printed after each token event's text (default: none)")
    parser.add_argument("--json", action="store_true",
                        help="print every event as one JSON object per line ({id, event, data}), for scripts")
    _add_connection_options(parser, default_url)


def _add_connection_options(parser: argparse.ArgumentParser, default_url: str) -> None:
    parser.add_argument("--url", default=default_url, help=f"the gateway (default: $TOKENRELAY_URL or {DEFAULT_URL})")
    parser.add_argument("--api-key", default=os.environ.get("TOKENRELAY_API_KEY") or None,
                        help="sent as Authorization: Bearer (default: $TOKENRELAY_API_KEY)")
