"""Serving the gateway: uvicorn with the connection limits of `api.httpguard` and the direct writes of
`api.direct_write`, on one or N processes.

`python -m api.server --host H --port P [--workers N]` (what `tokenrelay api`, `tokenrelay dev`, compose
and the tests run), settings from the environment. `--workers N` (default: the number of cores) runs N
processes on the port (`api.processes`). Plain `uvicorn --factory api.app:app_from_env` serves the same
app on one process without those limits (see README, "Limits").
"""

from __future__ import annotations

import argparse

import uvicorn

from tokenrelay.core.settings import Settings

from .app import create_app
from .direct_write import with_direct_writes
from .event_stream import StreamHandoff
from .httpguard import ConnectionLimits, guarded_protocol
from .processes import Gateways, default_workers, listening_socket

BACKLOG = 4096  # pending connections per process: a burst of clients waits instead of being refused


def connection_limits(settings: Settings) -> ConnectionLimits:
    return ConnectionLimits(max_header_bytes=settings.max_header_bytes, header_timeout_s=settings.header_timeout_s,
                            max_connections=settings.max_connections)


def gateway_config(settings: Settings, app, **uvicorn_options: object) -> uvicorn.Config:
    """uvicorn's configuration for the gateway `app` (from `create_app(settings)`), as it is served."""
    protocol = with_direct_writes(guarded_protocol(connection_limits(settings)))
    # Streams are handed off outside the whole app, framework layers included (api/event_stream.py).
    # log_config=None: logging is configured by the product (tokenrelay.core.logs), uvicorn's included.
    return uvicorn.Config(StreamHandoff(app), http=protocol, log_config=None, backlog=BACKLOG, **uvicorn_options)


def serve(settings: Settings, host: str, port: int, *, reuse_port: bool = False, **uvicorn_options: object) -> None:
    """One gateway process on its own listening socket (SO_REUSEPORT when it is one of several)."""
    sock = listening_socket(host, port, reuse_port=reuse_port)
    uvicorn.Server(gateway_config(settings, create_app(settings), **uvicorn_options)).run(sockets=[sock])


def main(argv: list[str] | None = None) -> int:
    from tokenrelay.core.logs import configure_logging
    from tokenrelay.core.settings import load_settings

    parser = argparse.ArgumentParser(prog="python -m api.server", description="the tokenrelay gateway")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=None,
                        help="gateway processes on this port, each with its own relay (default: the number of cores)")
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--timeout-graceful-shutdown", type=float, default=5.0)
    parser.add_argument("--no-access-log", dest="access_log", action="store_false")
    parser.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)  # one of N processes
    args = parser.parse_args(argv)
    workers = args.workers or default_workers()
    if workers > 1 and not args.reuse_port:
        child_args = ["--log-level", args.log_level, "--timeout-graceful-shutdown", str(args.timeout_graceful_shutdown),
                      *([] if args.access_log else ["--no-access-log"])]
        return Gateways(workers, args.host, args.port, child_args).run()
    settings = load_settings()
    configure_logging(settings)
    serve(settings, args.host, args.port, reuse_port=args.reuse_port, log_level=args.log_level,
          timeout_graceful_shutdown=args.timeout_graceful_shutdown, access_log=args.access_log)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
