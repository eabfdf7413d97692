"""Lease renewal for one worker process: a thread of its own, with a Redis connection of its own.

Deliberate choices (read before changing):
- Liveness of the process and progress of its jobs are different signals. Renewals ran on the
  jobs' event loop and through their connection pool, so they waited behind job traffic exactly
  when the worker was busiest (issue #11: 6.9 s for a connection, leases of a live worker
  claimed). Here nothing the jobs do can delay a renewal but the GIL.
- A fixed schedule: renewal n is due at start + n x interval, however long the previous one took;
  after a stall the schedule restarts from now instead of firing a burst of catch-up renewals.
- Each renewal writes, in one round trip, every running job's lease (`renew.lua`, in the job's slot),
  its entry in the running index's bucket, this process's heartbeat and its liveness key, which
  reapers check before claiming a job of this process. One pipeline, split by node on a cluster.
- The job ids are read from the runtime's dict from this thread: `list(d)` of a dict with str keys
  runs in C without releasing the GIL, so it never sees the dict mid-change.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from tokenrelay.core.connections import RedisTarget, sync_client
from tokenrelay.core.keys import Keys
from tokenrelay.core.lua import load_script

from .metrics import worker_metrics

log = logging.getLogger("tokenrelay.worker")


class Heartbeat:
    def __init__(self, target: RedisTarget, keys: Keys, worker_id: str, lease_ms: int, interval_s: float,
                 leases: Callable[[], dict[str, int]]) -> None:
        self.keys = keys
        self.worker_id = worker_id
        self.lease_ms = lease_ms
        self.interval_s = interval_s
        self.leases = leases  # job id -> attempt, of the jobs running now
        # Socket timeout under the lease: a renewal stuck on a dead connection is retried in time.
        timeout_s = max(0.5, lease_ms / 1000 / 3)
        self.redis = sync_client(target, socket_timeout=timeout_s)
        # EVAL, not EVALSHA: a cluster pipeline refuses EVALSHA, and a new primary has no script cache.
        self._renew = load_script("renew")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tokenrelay-heartbeat", daemon=True)
        self.last_renewal: float | None = None
        self.longest_gap_s = 0.0

    def start(self) -> None:
        self.beat()  # alive before the first job starts
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        try:
            self.redis.delete(self.keys.worker_alive(self.worker_id))
        except Exception:  # noqa: BLE001 - Redis may be gone at shutdown
            pass
        self.redis.close()

    def beat(self) -> None:
        """Renew every lease of this process and its liveness key, in one round trip."""
        leases = self.leases()
        seconds, micros = self.redis.time()  # gateways count live workers by Redis's clock
        now_ms = seconds * 1000 + micros // 1000
        check_at_ms = int(time.time() * 1000) + self.lease_ms  # the reapers' clock
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id, attempt in leases.items():
                # execute_command: a cluster pipeline has no eval() of its own, but routes EVAL by its keys.
                pipe.execute_command("EVAL", self._renew, 2, self.keys.meta(job_id), self.keys.lease(job_id),
                                     attempt, self.lease_ms)
                pipe.zadd(self.keys.running(job_id), {job_id: check_at_ms})
            pipe.zadd(self.keys.workers, {self.worker_id: now_ms})
            pipe.set(self.keys.worker_alive(self.worker_id), 1, px=self.lease_ms)
            pipe.execute()
        now = time.monotonic()
        if self.last_renewal is not None:
            gap = now - self.last_renewal
            if gap > self.lease_ms / 1000 / 2:
                log.warning("lease renewal %.2f s after the previous one (lease %.1f s)", gap, self.lease_ms / 1000)
            if gap > self.longest_gap_s:
                self.longest_gap_s = gap
                worker_metrics().heartbeat_gap.set(gap)
        self.last_renewal = now

    def _run(self) -> None:
        due = time.monotonic()
        while not self._stop.is_set():
            due += self.interval_s
            now = time.monotonic()
            if due < now - self.interval_s:  # stalled for more than a period: start again from now
                due = now
            if self._stop.wait(max(0.0, due - now)):
                return
            try:
                self.beat()
            except Exception as exc:  # noqa: BLE001 - Redis away: the next renewal tries again
                log.warning("lease renewal failed: %s", exc)
