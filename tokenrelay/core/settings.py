"""Typed settings, read from `TOKENRELAY_*` environment variables by `load_settings()`.

Nothing reads the environment at import: callers build a `Settings` and pass it down.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

if TYPE_CHECKING:
    from .connections import RedisTarget

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_GRAPHS = {
    "joke_poem": "tokenrelay.engine.examples.joke_poem:build",
    "custom_progress": "tokenrelay.engine.examples.custom_progress:build",
    "calculator_agent": "tokenrelay.engine.examples.calculator_agent:build",
}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TOKENRELAY_", extra="ignore")

    # Where streams and job records live; also the Celery broker unless broker_url is set. One server
    # (redis://, rediss://, unix://), Sentinel (redis+sentinel://h:p,h:p/<service>[/db]) or a cluster
    # (redis+cluster://h:p,h:p; needs broker_url). See tokenrelay/core/connections.py.
    redis_url: str = DEFAULT_REDIS_URL
    broker_url: str | None = None
    # Prefix of every Redis key the product writes (see tokenrelay.core.keys.Keys).
    key_prefix: str = "tokenrelay"
    queue_name: str = "tokenrelay"

    # Models a client may name. `demo` is offline; `openai:<name>` uses ChatOpenAI.
    models: Annotated[list[str], NoDecode] = ["demo", "openai:gpt-4o-mini"]
    openai_api_key: str | None = Field(
        default=None, validation_alias=AliasChoices("TOKENRELAY_OPENAI_API_KEY", "OPENAI_API_KEY")
    )
    openai_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("TOKENRELAY_OPENAI_BASE_URL", "OPENAI_BASE_URL")
    )

    # Retention of finished jobs' streams and records.
    retention_s: int = 24 * 3600
    # Hard limit on one attempt of a job; past it the job fails with error type `timeout`.
    job_timeout_s: float = 3600.0

    # Request limits.
    max_body_bytes: int = 1_000_000
    max_messages: int = 256
    max_message_chars: int = 200_000
    max_tokens_limit: int = 16_384
    default_max_tokens: int = 64
    # Tools a job may pass, and the size of each tool's (and a response format's) JSON, compact.
    max_tools: int = 128
    max_tool_schema_bytes: int = 16_384
    # Before a request reaches the app (api/httpguard.py): header bytes (431), seconds to send the
    # headers (then 408 and close), open connections per gateway process (then 503 and close).
    max_header_bytes: int = 16_384
    header_timeout_s: float = 5.0
    max_connections: int = 16_000

    # Authentication (see api/auth.py). Each entry is `<name>:<sha256 hex of the key>[:admin]`;
    # none configured = no authentication, for a gateway on loopback only.
    api_keys: Annotated[list[str], NoDecode] = []
    # Signs stream tokens; gateways behind one load balancer need the same one. Unset: derived
    # from api_keys, so gateways with the same keys agree.
    stream_token_secret: str | None = None
    stream_token_ttl_s: int = 300

    # Quotas (see api/quotas.py); refusals are 429 with Retry-After.
    rate_limit_per_minute: int = 600
    max_active_jobs_per_key: int = 64
    max_queued_jobs: int = 10_000
    # Back-pressure (api/backpressure.py): past this many submits in progress in one gateway process,
    # a submit is refused at once with 503 `overloaded` and a Retry-After from the backlog.
    max_pending_submits: int = 2_000
    # A submit whose record is not stored within this long is refused (503); once it is stored the
    # answer is 202 even if the task is still being sent.
    submit_timeout_s: float = 5.0
    # A job whose task was not confirmed sent within this long is sent by a gateway's outbox sweep.
    outbox_grace_s: float = 10.0
    # Per gateway process; counted over open streams of one job.
    max_readers_per_job: int = 500
    # One stream connection's lifetime; past it the response ends and the client resumes.
    max_stream_s: float = 3600.0

    # Gateway relay.
    keepalive_s: float = 15.0
    client_buffer_events: int = 2_000
    history_batch: int = 1_000
    redis_pool_size: int = 5

    # Worker.
    worker_concurrency: int = 500
    # A running job's lease; a worker that stops renewing it for this long is presumed lost.
    lease_ttl_s: float = 10.0
    reaper_interval_s: float = 1.0
    # Broker redelivery of unacknowledged messages (Redis broker). Leases prevent double runs,
    # so this only bounds how long a message prefetched by a lost worker waits.
    visibility_timeout_s: int = 300
    # Tokens are written as soon as the previous write returned; this extra wait (0 = none)
    # lets more tokens share one write. A lone token is never held back longer than this.
    flush_window_ms: float = 0.0
    # How long a stream write is retried while Redis does not answer (a failover, a restart); past it
    # the job fails with `write_failed`. Keep it above the failover time of your Sentinel or Cluster.
    write_retry_s: float = 30.0
    # Adds `ts` (production time, Unix seconds) to token events: for measuring delivery lag.
    event_timestamps: bool = False

    # Graphs clients may run by name: name -> `module:attribute` of a compiled LangGraph graph or of a
    # factory `f(model) -> graph`. Clients name a graph, never an import path (JSON in the environment).
    graphs: dict[str, str] = dict(DEFAULT_GRAPHS)
    # Provider errors that may pass (connection lost, 429, 5xx): tries per job attempt, and the waits
    # between them. Before the first event a retry is invisible; after it, readers get a `reset`.
    provider_attempts: int = Field(default=3, ge=1, le=10)
    provider_retry_delays_s: Annotated[list[float], NoDecode] = [0.5, 2.0]

    # Observability. `log_format="json"` writes one JSON object per line; prompts are never logged
    # unless `log_prompts` (a debug setting) is on. The worker serves Prometheus metrics on
    # `worker_metrics_port` when it is set (the gateway serves them at /metrics).
    log_format: Literal["text", "json"] = "text"
    log_level: str = "INFO"
    log_prompts: bool = False
    worker_metrics_port: int | None = None

    @field_validator("models", "api_keys", "provider_retry_delays_s", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        # Environment values are comma-separated lists; pydantic converts each item to the field's type.
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("openai_api_key", "openai_base_url", "broker_url", "stream_token_secret", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def redis_target(self) -> RedisTarget:
        from .connections import parse_redis_url  # not at import: the client package never loads redis

        return parse_redis_url(self.redis_url)

    @property
    def celery_broker(self) -> tuple[str, dict]:
        """Celery's broker URL and transport options (see connections.celery_broker)."""
        from .connections import celery_broker

        return celery_broker(self.redis_url, self.broker_url)


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with explicit overrides (e.g. from CLI flags) on top.

    Every command starts here: a Redis or broker URL it cannot use stops it with one line.
    """
    from .connections import BrokerUrlMissing, RedisUrlError

    clean = {key: value for key, value in overrides.items() if value is not None}
    settings = Settings(**clean)
    try:
        settings.redis_target, settings.celery_broker  # noqa: B018 - parsed for their errors
    except (RedisUrlError, BrokerUrlMissing) as exc:
        raise SystemExit(f"tokenrelay: {exc}") from None
    return settings
