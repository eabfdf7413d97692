"""The gateway's app factory: `create_app(settings)` opens Redis and the broker in the lifespan."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI
from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster

from tokenrelay import __version__
from tokenrelay.core.connections import async_client
from tokenrelay.core.heap import settle_heap
from tokenrelay.core.keys import Keys
from tokenrelay.core.settings import Settings
from tokenrelay.core.store import JobScripts
from tokenrelay.core.submit import SubmitScript, one_step_possible
from tokenrelay.core.task_message import RedisTaskSender, is_redis_broker
from tokenrelay.core.tasks import TaskSender, create_celery_app

from . import ai_sdk, jobs_list, metrics, openai_compat, responses, webpage
from .auth import Authenticate, KeyRing, StreamTokens, token_secret
from .backpressure import GatewayPool, SubmitGate
from .docs import install_docs
from .errors import install_error_handlers
from .event_stream import StreamHandoff
from .limits import BodySizeLimit
from .metrics import GatewayMetrics
from .outbox import OutboxSweeper
from .quotas import RateLimit, ReaderSlots, submit_paths
from .relay import Relay
from .routes import router
from .stream_tokens import router as stream_token_router

log = logging.getLogger("tokenrelay.gateway")

# Under a burst, requests wait for a connection rather than fail: the pool is small on purpose.
POOL_WAIT_S = 10.0
# Gateway commands are short (the blocking XREAD has its own connection): a stalled or
# blackholed Redis must turn into a 503 within seconds, not hang a request.
COMMAND_TIMEOUT_S = 3.0


def _redis_pool(settings: Settings) -> Redis | RedisCluster:
    return async_client(settings.redis_target, max_connections=settings.redis_pool_size, pool_wait_s=POOL_WAIT_S,
                        socket_timeout=COMMAND_TIMEOUT_S, client_name=f"tokenrelay-gateway:{os.getpid()}",
                        pool_class=GatewayPool)


def _task_sender(settings: Settings, redis: Redis | RedisCluster, celery_app) -> RedisTaskSender | TaskSender:
    """One LPUSH per task on a Redis broker (through the gateway's client when the broker is the job
    store, one server or Sentinel), kombu's producer for any other broker (RabbitMQ)."""
    if settings.broker_url is None:
        return RedisTaskSender(redis, settings.queue_name)
    if not is_redis_broker(settings.broker_url):
        return TaskSender(celery_app)
    # Sends wait for a connection, as on the job store's pool: a capped pool that refuses would turn a
    # burst of submits (up to twice the pool at once) into refused tasks.
    pool = BlockingConnectionPool.from_url(settings.broker_url, socket_timeout=COMMAND_TIMEOUT_S,
                                           socket_connect_timeout=3, socket_keepalive=True,
                                           max_connections=settings.redis_pool_size, timeout=POOL_WAIT_S,
                                           client_name=f"tokenrelay-gateway-broker:{os.getpid()}")
    broker = Redis.from_pool(pool)  # closed with the client
    return RedisTaskSender(broker, settings.queue_name, owns_client=True)


async def _warm(redis: Redis | RedisCluster, size: int) -> None:
    """Open the pool's connections up front: a fixed count, whatever the number of readers."""
    if isinstance(redis, RedisCluster):
        await redis.initialize()
        return
    pool = redis.connection_pool
    connections = [await pool.get_connection() for _ in range(size)]
    for connection in connections:
        await pool.release(connection)


def create_app(settings: Settings) -> FastAPI:
    keyring = KeyRing(settings.api_keys)  # a malformed entry fails here, at start-up
    stream_tokens = StreamTokens(token_secret(settings), settings.stream_token_ttl_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        keys = Keys(settings.key_prefix)
        redis = _redis_pool(settings)
        celery_app = create_celery_app(settings)
        # The relay's live reads: one connection of their own, without a timer per reply (api/relay.py).
        pump_redis = async_client(settings.redis_target, max_connections=1, pool_wait_s=POOL_WAIT_S,
                                  socket_timeout=None, client_name=f"tokenrelay-gateway-relay:{os.getpid()}")
        relay = Relay(redis, settings.redis_target, keys, history_batch=settings.history_batch,
                      client_buffer_events=settings.client_buffer_events, keepalive_s=settings.keepalive_s,
                      hooks=app.state.metrics.relay_hooks(), pump_redis=pump_redis,
                      read_timeout_s=COMMAND_TIMEOUT_S)
        state = app.state
        state.settings, state.keys, state.redis, state.relay = settings, keys, redis, relay
        state.scripts = JobScripts(redis, keys)
        state.tasks = _task_sender(settings, redis, celery_app)
        # One round trip per submit where the broker is the job store's one server (api/admission.py).
        state.submit_script = SubmitScript(redis, keys, settings, state.tasks) if one_step_possible(settings) else None
        state.started_at = int(time.time())
        state.stream_tokens = stream_tokens
        state.reader_slots = ReaderSlots(settings.max_readers_per_job)
        state.submit_gate = SubmitGate(settings.max_pending_submits, concurrency=2 * settings.redis_pool_size)
        sweeper = OutboxSweeper(state)
        if not keyring.enabled:
            log.warning("no API keys configured (TOKENRELAY_API_KEYS): authentication is off; "
                        "serve on a loopback address only")
        try:
            await _warm(redis, settings.redis_pool_size)
            await _warm(pump_redis, 1)
        except Exception as exc:  # noqa: BLE001 - start anyway; /ready reports Redis as down
            log.warning("redis not reachable at start-up: %s", type(exc).__name__)
        await relay.start()
        sweeper.start()
        settle_heap()  # a thousand streams must not stall together in a full garbage collection
        try:
            yield
        finally:
            await sweeper.stop()
            await relay.stop()
            await redis.aclose()
            await pump_redis.aclose()
            await state.tasks.aclose()
            await asyncio.to_thread(celery_app.close)

    app = FastAPI(
        title="tokenrelay",
        version=__version__,
        summary="Run LLM jobs on Celery workers; stream their tokens to many clients over SSE.",
        lifespan=lifespan,
        docs_url=None,  # served by install_docs, without a CDN
        redoc_url=None,
    )
    install_error_handlers(app)
    app.state.metrics = GatewayMetrics()
    metrics.count_redis_errors(app, app.state.metrics)
    routers = [router, stream_token_router, jobs_list.router, openai_compat.router, responses.router, ai_sdk.router,
               metrics.router, webpage.router]
    for each in routers:
        app.include_router(each)
    install_docs(app)
    app.mount("/web", webpage.static_files(), name="web")
    # The last added runs first: authenticate, then count the request, then read the body.
    app.add_middleware(BodySizeLimit, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(RateLimit, per_minute=settings.rate_limit_per_minute,
                       submit_paths=submit_paths(route for each in routers for route in each.routes))
    app.add_middleware(Authenticate, keyring=keyring, tokens=stream_tokens)
    app.add_middleware(StreamHandoff)  # outermost: streams after everything above has returned
    return app


def app_from_env() -> FastAPI:
    """Zero-argument factory for `uvicorn --factory api.app:app_from_env`: settings from the environment."""
    from tokenrelay.core.logs import configure_logging
    from tokenrelay.core.settings import load_settings

    settings = load_settings()
    configure_logging(settings)
    return create_app(settings)
