"""The Redis broker transport, made to survive a lost broker connection while tasks are in flight.

kombu 5.7 with redis-py 8: when the broker connection drops while a task is unacknowledged (with
acks_late, every running job), closing the channel tries to restore the message through a pool it
has just disconnected, and acknowledging it later goes through that dead channel too. Both raise
AttributeError, which Celery calls unrecoverable: the worker exits after its running jobs, so one
Redis restart would take every busy worker down.

Here a closed channel neither restores nor acknowledges. That loses nothing: the message stays in
Redis's `unacked` hash and any worker restores it after visibility_timeout; the job then is either
finished (nothing runs) or running under a live lease (nothing runs twice), and a job whose worker
is really lost is queued again sooner by the lease reaper (worker/runtime.py). The same holds for
the Sentinel transport (a `redis+sentinel://` broker URL).

A received message is handed to the worker first and recorded as unacknowledged right after, on the
same thread (kombu records it first, a round trip every job's start waited for). The record is written
as early as before, and it cannot come after the acknowledgement: Celery acknowledges on its consumer's
event loop, which is this thread, busy with the record until it is written. A message the worker
acknowledged or rejected at once (an unknown task) is not recorded at all.

Also, kombu builds a new redis-py client (around the same pool) for every acknowledgement and for the
bookkeeping of every message received; here the channel keeps one: redis-py clients are thread-safe
and cheap to share, costly to build (a few percent of a busy worker's CPU).
"""

from __future__ import annotations

from kombu.transport import redis

TRANSPORT = "tokenrelay.core.broker:Transport"
SENTINEL_TRANSPORT = "tokenrelay.core.broker:SentinelTransport"


class QoS(redis.QoS):
    def ack(self, delivery_tag) -> None:
        if self.channel.connection is not None:
            super().ack(delivery_tag)

    def reject(self, delivery_tag, requeue=False) -> None:
        if self.channel.connection is not None:
            super().reject(delivery_tag, requeue)


class _OneClient:
    """The channel's synchronous client, built once per connection pool (kombu makes a new pool after a
    connection loss)."""

    _sync_client = None

    def _create_client(self, asynchronous=False):
        if asynchronous:
            return super()._create_client(asynchronous=True)
        client = self._sync_client
        if client is None or client.connection_pool is not self.pool:
            client = self._sync_client = super()._create_client()
        return client


class _TrackAfterDispatch:
    """basic_consume that records a message as unacknowledged after its callback, not before."""

    def basic_consume(self, queue, no_ack, callback, consumer_tag, **kwargs):
        if no_ack:
            return super().basic_consume(queue, no_ack, callback, consumer_tag, **kwargs)

        def dispatch_then_track(message):
            try:
                return callback(message)
            finally:
                if not message.acknowledged:
                    self.qos.append(message, message.delivery_tag)

        # no_ack=True here only stops kombu from recording the message itself, before the callback.
        return super().basic_consume(queue, True, dispatch_then_track, consumer_tag, **kwargs)


class Channel(_TrackAfterDispatch, _OneClient, redis.Channel):
    QoS = QoS
    do_restore = False


class Transport(redis.Transport):
    Channel = Channel


class SentinelChannel(_TrackAfterDispatch, _OneClient, redis.SentinelChannel):
    QoS = QoS
    do_restore = False


class SentinelTransport(redis.SentinelTransport):
    Channel = SentinelChannel
