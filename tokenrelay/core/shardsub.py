"""Sharded pub/sub on any topology: one subscriber connection per node that serves a subscribed channel.

Deliberate choices (read before changing):
- `SSUBSCRIBE` names channels of one slot per call, and on a cluster it must reach the primary of that
  slot; channels are grouped by node here, one connection and one reader task per node. On one server
  (or Sentinel's current primary) there is one group.
- A message is a hint: `on_message(channel, data)` may use what it carries, but the caller can always
  read what changed from where it keeps the data (streams). A lost message or a lost connection
  therefore loses nothing but time. `on_ready(channel)` fires when
  a subscription is confirmed by the server, after the first subscribe and after every re-subscribe,
  so the caller reads whatever was published while it was not listening.
- A node's connection that fails (node down, failover, slot moved: `-MOVED`, a server-side
  `sunsubscribe`) is dropped; `on_lost` is told which channels were affected, the slot map is
  refreshed and the channels are subscribed again wherever they live now, retrying until it works.
- A node's connection stays open when its last channel is released, until it fails or the subscriber
  closes: one job at a time would otherwise open (and handshake) a connection per job.
- A silent connection is pinged; no answer within `ping_timeout_s` counts as a failure, so a
  blackholed node is noticed instead of waited on forever.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from redis.asyncio import Redis, RedisCluster

log = logging.getLogger("tokenrelay.shardsub")

RETRY_DELAY_S = 0.5
PING_INTERVAL_S = 2.0


class _NodeGroup:
    """The channels subscribed on one node, its connection and its reader task."""

    def __init__(self, name: str, client: Redis) -> None:
        self.name = name
        self.client = client
        self.pubsub = client.pubsub()
        self.channels: set[bytes] = set()
        self.task: asyncio.Task | None = None
        self.last_heard = 0.0  # monotonic time of the node's last message (or pong)
        self.silent = False  # stopped by the watchdog: no answer for ping_timeout_s

    async def close(self) -> None:
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        try:
            await self.pubsub.aclose()
        except Exception:  # noqa: BLE001 - the connection may already be gone
            pass
        await self.client.aclose()


class ShardSubscriber:
    def __init__(self, redis: Redis | RedisCluster, connect: Callable[[tuple[str, int] | None], Redis], *,
                 on_message: Callable[[bytes, bytes], None], on_ready: Callable[[bytes], None],
                 on_lost: Callable[[set[bytes]], None], ping_timeout_s: float = 5.0) -> None:
        self.redis = redis
        self.connect = connect  # a client for one node (None: the server, or Sentinel's primary)
        self.on_message = on_message
        self.on_ready = on_ready
        self.on_lost = on_lost
        self.ping_timeout_s = ping_timeout_s
        self.channels: set[bytes] = set()
        self._groups: dict[str, _NodeGroup] = {}
        self._by_channel: dict[bytes, _NodeGroup] = {}
        self._lock = asyncio.Lock()
        self._retry: asyncio.Task | None = None
        self._drops: set[asyncio.Task] = set()
        self._closed = False

    async def subscribe(self, channel: bytes) -> bool:
        """Subscribe; True if the subscription was active already (no new `on_ready` will come)."""
        self.channels.add(channel)
        async with self._lock:
            if channel in self._by_channel:
                return True
            await self._place(channel)
        return False

    def sent(self, channel: bytes) -> bool:
        """True once `channel`'s subscription went out on a live connection (its `on_ready` is due)."""
        return channel in self._by_channel

    def release(self, channel: bytes) -> None:
        """Stop listening to `channel`; the server is told in the background, unless it is wanted again."""
        self.channels.discard(channel)
        task = asyncio.get_running_loop().create_task(self._drop(channel))
        self._drops.add(task)
        task.add_done_callback(self._drops.discard)

    async def _drop(self, channel: bytes) -> None:
        async with self._lock:
            group = self._by_channel.get(channel)
            if group is None or channel in self.channels:
                return
            del self._by_channel[channel]
            group.channels.discard(channel)
            try:  # the node's connection stays: the next job's subscribe costs no new connection
                await group.pubsub.sunsubscribe(channel)
            except Exception:  # noqa: BLE001 - the reader task notices a dead connection
                pass

    async def close(self) -> None:
        self._closed = True
        for task in [self._retry, *self._drops]:
            if task is not None:
                task.cancel()
        for group in list(self._groups.values()):
            await group.close()
        self._groups.clear()

    # -- placement ------------------------------------------------------------------------------------

    def _node_of(self, channel: bytes) -> tuple[str, tuple[str, int] | None]:
        if isinstance(self.redis, RedisCluster):
            node = self.redis.get_node_from_key(channel)
            return node.name, (node.host, node.port)
        return "server", None

    async def _place(self, channel: bytes) -> None:
        """Subscribe `channel` on the node that serves it now; on failure, leave it to the retry loop."""
        if channel in self._by_channel or channel not in self.channels:
            return
        group = None
        try:
            name, address = self._node_of(channel)
            group = self._groups.get(name)
            if group is None:
                group = self._groups[name] = _NodeGroup(name, self.connect(address))
            await group.pubsub.ssubscribe(channel)
        except Exception as exc:  # noqa: BLE001 - Redis down or moving: retried below
            log.warning("subscribe failed, retrying: %s", exc)
            if group is not None and not group.channels:
                self._groups.pop(group.name, None)
                await group.close()
            self._schedule_retry()
            return
        group.channels.add(channel)
        self._by_channel[channel] = group
        if group.task is None:
            group.task = asyncio.create_task(self._read(group), name=f"tokenrelay-sub-{name}")

    def _schedule_retry(self) -> None:
        if self._retry is None or self._retry.done():
            self._retry = asyncio.create_task(self._retry_forever(), name="tokenrelay-sub-retry")

    async def _retry_forever(self) -> None:
        while not self._closed:
            await asyncio.sleep(RETRY_DELAY_S)
            if isinstance(self.redis, RedisCluster):
                try:
                    await self.redis.nodes_manager.initialize()  # where every slot lives now
                except Exception as exc:  # noqa: BLE001 - the cluster is still failing over
                    log.warning("cluster slot map refresh failed: %s", exc)
                    continue
            async with self._lock:
                for channel in list(self.channels - set(self._by_channel)):
                    await self._place(channel)
                if self.channels <= set(self._by_channel):
                    return

    # -- one node ---------------------------------------------------------------------------------------

    async def _read(self, group: _NodeGroup) -> None:
        """Read the node's messages until its connection fails. The read itself waits without a timer:
        redis-py's timed read arms one per message, and a gateway following 500 jobs gets thousands a
        second; `_watch` pings a silent connection and closes one that does not answer."""
        group.last_heard = time.monotonic()
        watchdog = asyncio.create_task(self._watch(group), name=f"tokenrelay-sub-watch-{group.name}")
        try:
            while True:
                response = await group.pubsub.parse_response(block=True)
                group.last_heard = time.monotonic()
                if response is None:
                    continue
                if isinstance(response, list) and response[0] == b"smessage":
                    self.on_message(response[1], response[2])  # the common case, without redis-py's message dict
                    continue
                message = await group.pubsub.handle_message(response)
                kind = message["type"] if message else None
                if kind == "ssubscribe":
                    self.on_ready(message["channel"])
                elif kind == "sunsubscribe" and message["channel"] in group.channels:
                    # Not ours: the server moved the slot away (failover or resharding).
                    raise ConnectionError(f"{group.name} dropped a subscription (slot moved)")
        except asyncio.CancelledError:
            if not group.silent:
                raise
            asyncio.current_task().uncancel()  # the watchdog's: the node stopped answering
            log.warning("subscription on %s lost: no answer for %ss", group.name, self.ping_timeout_s)
        except Exception as exc:  # noqa: BLE001 - any failure: move this node's channels elsewhere
            log.warning("subscription on %s lost: %s", group.name, exc)
        finally:
            watchdog.cancel()
        async with self._lock:
            if self._groups.get(group.name) is group:
                self._groups.pop(group.name)
            lost = set(group.channels)
            for channel in lost:
                if self._by_channel.get(channel) is group:
                    del self._by_channel[channel]
            await group.close()
        self.on_lost(lost)
        self._schedule_retry()

    async def _watch(self, group: _NodeGroup) -> None:
        """Ping a connection silent for `PING_INTERVAL_S`; stop the reader of one silent for
        `ping_timeout_s` (a blackholed node): its channels move as after any failure."""
        while True:
            await asyncio.sleep(PING_INTERVAL_S / 2)
            silent_s = time.monotonic() - group.last_heard
            if silent_s > self.ping_timeout_s:
                group.silent = True
                if group.task is not None:
                    group.task.cancel()
                return
            if silent_s > PING_INTERVAL_S:
                try:
                    await group.pubsub.ping()
                except Exception:  # noqa: BLE001 - the reader sees the broken connection
                    pass
