"""The broker transport: kombu's Redis transport, surviving a Redis outage with tasks in flight.

When a worker loses its connection to Redis, kombu closes the channel and puts the messages
its tasks hold back on their queues. With Redis unreachable that fails, and the failure
(kombu finds the channel's connection already gone) stops the whole worker: a thread-pool
classify worker holding a chord's messages did not come back after a 10 s Redis restart.
Here the failure is logged instead, and the worker reconnects; the messages stay in Redis's
set of unacknowledged messages (their tasks finish and acknowledge them once Redis is back,
or Redis delivers them again after the visibility timeout). A task that finishes after the
reconnection acknowledges its message on the closed channel, which stopped the worker as well:
it is acknowledged through a connection of its own.
"""

from __future__ import annotations

import logging

import redis
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual

from infra.settings import get_settings

log = logging.getLogger("karyoflow.worker")


class QoS(kombu_redis.QoS):
    def ack(self, delivery_tag):
        """A task that finished after its worker reconnected acknowledges its message through
        the channel it came on, which is closed: then through a connection of its own."""
        try:
            return super().ack(delivery_tag)
        except Exception as error:  # noqa: BLE001 - whatever the closed channel raises
            if getattr(self.channel, "connection", None) is not None:
                raise
            self._ack_on_own_connection(delivery_tag, error)

    def reject(self, delivery_tag, requeue=False):
        try:
            return super().reject(delivery_tag, requeue=requeue)
        except Exception as error:  # noqa: BLE001
            if getattr(self.channel, "connection", None) is not None:
                raise
            log.warning("message %s not rejected on its closed channel (%r): it stays unacknowledged in "
                        "Redis, which delivers it again after the visibility timeout", delivery_tag, error)  # fmt: skip
            virtual.QoS.ack(self, delivery_tag)

    def _ack_on_own_connection(self, delivery_tag: str, error: BaseException) -> None:
        try:
            client = redis.Redis.from_url(get_settings().redis_url, socket_timeout=5, socket_connect_timeout=5)
            with client, client.pipeline() as pipe:
                pipe.zrem(self.unacked_index_key, delivery_tag).hdel(self.unacked_key, delivery_tag).execute()
        except redis.RedisError as again:
            log.warning("message %s not acknowledged (%r, then %r): it stays unacknowledged in Redis, which "
                        "delivers it again after the visibility timeout", delivery_tag, error, again)  # fmt: skip
        virtual.QoS.ack(self, delivery_tag)  # the channel's own bookkeeping

    def restore_unacked(self, client=None):
        try:
            return super().restore_unacked(client)
        except Exception as error:  # noqa: BLE001 - whatever the closed connection raises
            log.warning("%d messages in work not put back while Redis is unreachable (%r): they stay "
                        "unacknowledged in Redis", len(self._delivered), error)  # fmt: skip
            self._delivered.clear()
            return None


class Channel(kombu_redis.Channel):
    QoS = QoS


class Transport(kombu_redis.Transport):
    Channel = Channel
