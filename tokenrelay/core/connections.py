"""Every Redis client the gateway and the worker use, built from one URL whatever the topology.

  redis://…, rediss://…, unix://…                              one server
  redis+sentinel://[user:password@]host:port[,host:port…]/<service>[/db]   Sentinel: follows the primary
  redis+cluster://[user:password@]host:port[,host:port…]         Cluster: any reachable nodes seed it

The product's code is the same on all three: every script and transaction touches one slot
(see keys.py), and the clients built here route each command to the node that serves it.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import redis as sync_redis
from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

SINGLE_SCHEMES = ("redis", "rediss", "unix")
SENTINEL_SCHEME = "redis+sentinel"
CLUSTER_SCHEME = "redis+cluster"
DEFAULT_PORT = 6379
DEFAULT_SENTINEL_PORT = 26379
# A cluster client keeps a pool per node and refuses past it; commands are short, so a modest cap per
# node holds bursts without growing with readers.
CLUSTER_CONNECTIONS_PER_NODE = 32
SENTINEL_TIMEOUT_S = 2.0


class RedisUrlError(ValueError):
    """Raised when a Redis URL is malformed or names no supported topology."""


@dataclass(frozen=True)
class RedisTarget:
    """What a Redis URL names: its topology, its seed hosts and credentials."""

    kind: str  # "single", "sentinel" or "cluster"
    url: str
    hosts: tuple[tuple[str, int], ...] = ()
    service: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = None

    @property
    def is_cluster(self) -> bool:
        return self.kind == "cluster"


def _hosts(netloc: str, default_port: int, url: str) -> tuple[tuple[str, int], ...]:
    hosts = []
    for part in netloc.rsplit("@", 1)[-1].split(","):
        host, _, port = part.strip().rpartition(":") if ":" in part else (part.strip(), "", "")
        if not host:
            raise RedisUrlError(f"no host in Redis URL {redact(url)!r}")
        try:
            hosts.append((host.strip("[]"), int(port) if port else default_port))
        except ValueError:
            raise RedisUrlError(f"bad port in Redis URL {redact(url)!r}") from None
    return tuple(hosts)


def _credentials(netloc: str) -> tuple[str | None, str | None]:
    if "@" not in netloc:
        return None, None
    userinfo = netloc.rsplit("@", 1)[0]
    user, _, password = userinfo.partition(":")
    return (unquote(user) or None), (unquote(password) or None)


def parse_redis_url(url: str) -> RedisTarget:
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in SINGLE_SCHEMES:
        return RedisTarget("single", url)
    if scheme not in (SENTINEL_SCHEME, CLUSTER_SCHEME):
        raise RedisUrlError(f"unsupported Redis URL scheme {scheme!r}: use redis://, rediss://, unix://, "
                            "redis+sentinel:// or redis+cluster://")
    rest = url.split("://", 1)[1]
    netloc, _, path = rest.partition("/")
    username, password = _credentials(netloc)
    if scheme == CLUSTER_SCHEME:
        if path.strip("/"):
            raise RedisUrlError("a cluster has only database 0: redis+cluster://host:port[,host:port...]")
        return RedisTarget("cluster", url, _hosts(netloc, DEFAULT_PORT, url), username=username, password=password)
    parts = [unquote(part) for part in path.split("/") if part]
    if not parts or len(parts) > 2:
        raise RedisUrlError("a Sentinel URL names its service: redis+sentinel://host:port[,host:port...]/<service>[/db]")
    try:
        db = int(parts[1]) if len(parts) == 2 else 0
    except ValueError:
        raise RedisUrlError(f"bad database number in Redis URL {redact(url)!r}") from None
    return RedisTarget("sentinel", url, _hosts(netloc, DEFAULT_SENTINEL_PORT, url), service=parts[0], db=db,
                       username=username, password=password)


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    userinfo, host = rest.rsplit("@", 1)
    user = userinfo.split(":", 1)[0] + ":" if ":" in userinfo else ""
    return f"{scheme}://{user}***@{host}"


class _BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """Sentinel's pool (follows the primary) with the blocking pool's wait for a free connection."""


def async_client(target: RedisTarget, *, max_connections: int, pool_wait_s: float, socket_timeout: float,
                 client_name: str, pool_class: type[BlockingConnectionPool] = BlockingConnectionPool
                 ) -> Redis | RedisCluster:
    """A client for commands: waits up to `pool_wait_s` for one of `max_connections` connections."""
    options = dict(socket_timeout=socket_timeout, socket_connect_timeout=3, socket_keepalive=True,
                   client_name=client_name)
    if target.kind == "cluster":
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in target.hosts],
            username=target.username, password=target.password,
            max_connections=max(max_connections, CLUSTER_CONNECTIONS_PER_NODE), **options)
    if target.kind == "sentinel":
        sentinel = Sentinel(list(target.hosts), sentinel_kwargs={"socket_timeout": SENTINEL_TIMEOUT_S,
                                                                 "socket_connect_timeout": SENTINEL_TIMEOUT_S})
        return sentinel.master_for(target.service, redis_class=Redis, connection_pool_class=_BlockingSentinelPool,
                                   max_connections=max_connections, timeout=pool_wait_s, db=target.db,
                                   username=target.username, password=target.password, **options)
    # `pool_class` (one server only): the gateway's pool says when it ran out (api/backpressure.py).
    pool = pool_class.from_url(target.url, max_connections=max_connections, timeout=pool_wait_s,
                               health_check_interval=30, **options)
    return Redis(connection_pool=pool)


def subscriber_connector(target: RedisTarget, *, client_name: str):
    """A factory of single-connection clients for subscriptions: to one cluster node, or to the
    server (Sentinel: its current primary, found again after a failover)."""

    def connect(address: tuple[str, int] | None) -> Redis:
        options = dict(socket_timeout=10, socket_connect_timeout=3, socket_keepalive=True,
                       client_name=client_name)
        if address is not None:
            return Redis(host=address[0], port=address[1], username=target.username, password=target.password,
                         single_connection_client=False, max_connections=1, **options)
        if target.kind == "sentinel":
            return async_client(target, max_connections=1, pool_wait_s=1, socket_timeout=10, client_name=client_name)
        return Redis.from_url(target.url, max_connections=1, **options)

    return connect


def sync_client(target: RedisTarget, *, socket_timeout: float = 3.0) -> sync_redis.Redis | sync_redis.RedisCluster:
    """A blocking client, for the CLI's checks, tests and the benchmark."""
    options = dict(socket_timeout=socket_timeout, socket_connect_timeout=3)
    if target.kind == "cluster":
        return sync_redis.RedisCluster(
            startup_nodes=[sync_redis.cluster.ClusterNode(host, port) for host, port in target.hosts],
            username=target.username, password=target.password, **options)
    if target.kind == "sentinel":
        sentinel = sync_redis.Sentinel(list(target.hosts), sentinel_kwargs={"socket_timeout": SENTINEL_TIMEOUT_S})
        return sentinel.master_for(target.service, db=target.db, username=target.username,
                                   password=target.password, **options)
    return sync_redis.Redis.from_url(target.url, **options)


class BrokerUrlMissing(RuntimeError):
    """Raised when the Redis URL is a cluster and no separate broker URL is set."""


def celery_broker(redis_url: str, broker_url: str | None) -> tuple[str, dict]:
    """Celery's broker URL and the transport options its form needs.

    A `redis+sentinel://` URL becomes Celery's own `sentinel://h:p;sentinel://h:p` with `master_name`.
    Celery's Redis transport cannot use a cluster: that needs a broker URL of its own.
    """
    url = broker_url or redis_url
    target = parse_redis_url(url) if url.split("://", 1)[0].startswith("redis") else None
    if target is None or target.kind == "single":
        return url, {}
    if target.kind == "cluster":
        raise BrokerUrlMissing(
            "the Redis URL is a cluster, which Celery cannot use as a broker: set TOKENRELAY_BROKER_URL to a "
            "standalone or Sentinel Redis (redis://, redis+sentinel://) or to RabbitMQ (amqp://)")
    auth = ""
    if target.password:
        auth = f"{target.username or ''}:{target.password}@"
    sentinels = ";".join(f"sentinel://{auth if i == 0 else ''}{host}:{port}/{target.db}"
                         for i, (host, port) in enumerate(target.hosts))
    return sentinels, {"master_name": target.service,
                       "sentinel_kwargs": {"socket_timeout": SENTINEL_TIMEOUT_S}}
