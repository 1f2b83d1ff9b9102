"""The broker transport: kombu's Redis transport, surviving a Redis outage with tasks in flight.

When a worker loses its connection to Redis, kombu closes the channel and puts the messages
its tasks hold back on their queues. With Redis unreachable that fails, and the failure
(kombu finds the channel's connection already gone) stops the whole worker: a thread-pool
classify worker holding a chord's messages did not come back after a 10 s Redis restart.
Here the failure is logged instead, and the worker reconnects; the messages stay in Redis's
set of unacknowledged messages (their tasks finish and acknowledge them once Redis is back,
or Redis delivers them again after the visibility timeout).
"""

from __future__ import annotations

import logging

from kombu.transport import redis as kombu_redis

log = logging.getLogger("karyoflow.worker")


class QoS(kombu_redis.QoS):
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
