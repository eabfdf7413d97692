"""`tokenrelay graph NAME`: run a registered graph and print what it streams, through the public client.

Token text (and `custom` events' `token` field) goes to stdout; tool calls, tool results, progress,
updates and values go to stderr, one line each, so `2>/dev/null` leaves only the answer.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from typing import TextIO

from .values import non_negative_float, positive_int


def print_graph_events(events: Iterable, out: TextIO, err: TextIO) -> str | None:
    """Print a graph job's events as they arrive; return its final status (None without `end`)."""
    line_open = False

    def note(text: str) -> None:
        nonlocal line_open
        if line_open:
            print(file=out, flush=True)
            line_open = False
        print(text, file=err, flush=True)

    for event in events:
        data = event.data or {}
        if event.event == "token" or (event.event == "custom" and isinstance(data.get("data"), dict)
                                      and isinstance(data["data"].get("token"), str)):
            print(data["text"] if event.event == "token" else data["data"]["token"], end="", file=out, flush=True)
            line_open = True
        elif event.event == "tool_call":
            note(f"[calling {data.get('name')} {json.dumps(data.get('args'), ensure_ascii=False)}]")
        elif event.event == "tool_result":
            note(f"[{data.get('name')} returned {data.get('content')}]")
        elif event.event in ("custom", "update", "value"):
            note(f"[{event.event}] {json.dumps(data, ensure_ascii=False)}")
        elif event.event == "reset":
            note(f"[job restarted: attempt {data.get('attempt')} ({data.get('reason', '')})]")
        elif event.event == "error":
            note(f"error: {data.get('message') or 'the job failed'} ({data.get('type', 'error')})")
        elif event.event == "end":
            if line_open:
                print(file=out, flush=True)
            return data.get("status")
    return None


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a JSON object") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def add_graph_command(commands, default_url: str, handler, add_connection_options) -> None:
    graph = commands.add_parser("graph", help="run a registered graph and print what it streams")
    graph.add_argument("name", help="a graph name, e.g. joke_poem, custom_progress, calculator_agent")
    graph.add_argument("--input", type=_json_object, default={},
                       help='the input state as JSON, e.g. \'{"topic": "cats"}\' (default: {})')
    graph.add_argument("--question", help='shorthand for --input \'{"messages": [{"role": "user", "content": ...}]}\'')
    graph.add_argument("--stream-mode", default="messages", help="comma-separated: messages,custom,updates,values")
    graph.add_argument("--model", default=None, help="the graph's chat model (default: demo)")
    graph.add_argument("--max-tokens", type=positive_int, default=None,
                       help="tokens per model call (default: the server's, 64 unless configured)")
    graph.add_argument("--tokens-per-second", type=non_negative_float, default=None,
                       help="pace of the demo model, 0 = as fast as possible (default: 30)")
    graph.add_argument("--tags", help="only token events with any of these comma-separated tags (default: all)")
    graph.add_argument("--node", help="only events of these comma-separated nodes (default: all)")
    graph.add_argument("--events", help="only these comma-separated event types (default: all)")
    graph.add_argument("--final-only", action="store_true", help="only the final answer's tokens")
    add_connection_options(graph, default_url)
    graph.set_defaults(handler=handler)


def run_graph(args: argparse.Namespace, client) -> tuple[str, str | None]:
    """Submit the graph job and print its stream; returns (job id, final status)."""
    graph_input = dict(args.input)
    if args.question:
        graph_input["messages"] = [{"role": "user", "content": args.question}]
    params = {name: value for name, value in (("max_tokens", args.max_tokens),
                                              ("tokens_per_second", args.tokens_per_second)) if value is not None}
    modes = [mode.strip() for mode in args.stream_mode.split(",") if mode.strip()]
    job = client.submit_graph(args.name, graph_input, stream_mode=modes, model=args.model, params=params)
    print(f"job {job['id']}", file=sys.stderr, flush=True)
    filters = {"tags": args.tags, "node": args.node, "events": args.events, "final_only": args.final_only or None}
    status = print_graph_events(client.stream(job["id"], filters=filters), sys.stdout, sys.stderr)
    return job["id"], status
