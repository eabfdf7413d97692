"""Serving the gateway: uvicorn with the connection limits of `api.httpguard`.

`python -m api.server --host H --port P` (what `tokenrelay api`, `tokenrelay dev` and the tests run),
settings from the environment. Plain `uvicorn --factory api.app:app_from_env` serves the same app
without those limits (see README, "Limits").
"""

from __future__ import annotations

import argparse

import uvicorn

from tokenrelay.core.settings import Settings

from .app import create_app
from .httpguard import ConnectionLimits, guarded_protocol


def connection_limits(settings: Settings) -> ConnectionLimits:
    return ConnectionLimits(max_header_bytes=settings.max_header_bytes, header_timeout_s=settings.header_timeout_s,
                            max_connections=settings.max_connections)


def serve(settings: Settings, host: str, port: int, **uvicorn_options: object) -> None:
    # log_config=None: logging is configured by the product (tokenrelay.core.logs), uvicorn's included.
    uvicorn.run(create_app(settings), host=host, port=port, http=guarded_protocol(connection_limits(settings)),
                log_config=None, **uvicorn_options)


def main(argv: list[str] | None = None) -> None:
    from tokenrelay.core.logs import configure_logging
    from tokenrelay.core.settings import load_settings

    parser = argparse.ArgumentParser(prog="python -m api.server", description="the tokenrelay gateway")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--timeout-graceful-shutdown", type=float, default=5.0)
    args = parser.parse_args(argv)
    settings = load_settings()
    configure_logging(settings)
    serve(settings, args.host, args.port, log_level=args.log_level,
          timeout_graceful_shutdown=args.timeout_graceful_shutdown)


if __name__ == "__main__":
    main()
