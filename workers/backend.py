"""The result backend: Celery's Redis backend, waiting out a Redis outage where a chord's state
changes.

A classification that finishes while Redis is down must still count toward its chord: Celery's
backend counts it with one Redis call and, when that call fails, gives the chord up (the
assembly never runs and the case would wait for the sweeper). Here the count is retried with
the workers' retry policy (workers.retry) until Redis answers. Storing a result is retried by
Celery itself (`result_backend_always_retry`, workers.app).
"""

from __future__ import annotations

import logging

from celery.backends.redis import RedisBackend

from workers.retry import RetryPolicy

log = logging.getLogger("karyoflow.worker")


class PatientRedisBackend(RedisBackend):
    def on_chord_part_return(self, request, state, result, **kwargs):
        def count() -> None:
            super(PatientRedisBackend, self).on_chord_part_return(request, state, result, **kwargs)

        def waiting(error: BaseException, wait: float) -> None:
            log.warning("chord %s: Redis unreachable (%s); counting task %s again in %.1f s",
                        request.group, error, request.id, wait)  # fmt: skip

        return RetryPolicy.from_settings().call(count, self.connection_errors, waiting)
