"""The workers' retry policy (workers.retry) and the Celery settings that make publishing,
results and chords wait out a Redis outage (workers.app)."""

from __future__ import annotations

import random
import time

import pytest

from workers.retry import RetryPolicy

pytestmark = pytest.mark.unit


def test_the_backoff_doubles_up_to_its_cap_with_half_of_each_step_random() -> None:
    policy = RetryPolicy(first_s=1, cap_s=30, deadline_s=300)
    assert [policy.step(n) for n in range(8)] == [1, 2, 4, 8, 16, 30, 30, 30]
    assert policy.step(10_000) == 30  # no overflow however many tries
    rng = random.Random(7)
    for attempt in range(8):
        waits = [policy.delay(attempt, rng) for _ in range(200)]
        step = policy.step(attempt)
        assert step / 2 <= min(waits) and max(waits) <= step
        assert max(waits) - min(waits) > step / 4  # jittered, not one fixed wait


def test_retries_stop_at_the_deadline_counted_from_the_first_try() -> None:
    policy = RetryPolicy(first_s=1, cap_s=30, deadline_s=300)
    first = 1_000_000.0
    assert policy.next_delay(0, first, now=first + 1) is not None
    assert policy.next_delay(5, first, now=first + 250) is not None  # at most 30 s: still before 300
    assert policy.next_delay(5, first, now=first + 299) is None  # the wait would end past it
    # the policy waits out a minute-long outage: the tries keep coming until the deadline
    now, attempt, tries = first, 0, [first]
    while (wait := policy.next_delay(attempt, first, now=now)) is not None:
        now += wait
        attempt += 1
        tries.append(now)
    assert tries[-1] <= first + 300 and tries[-1] > first + 300 - 30
    gaps = [b - a for a, b in zip(tries, tries[1:], strict=False)]
    assert max(gaps) <= 30  # an outage's end is noticed within the cap


def test_call_retries_transient_errors_in_place_then_raises_the_last() -> None:
    policy = RetryPolicy(first_s=0.01, cap_s=0.02, deadline_s=0.5)
    calls = []

    def flaky() -> str:
        calls.append(time.monotonic())
        if len(calls) < 4:
            raise ConnectionError("down")
        return "up"

    assert policy.call(flaky, (ConnectionError,)) == "up" and len(calls) == 4

    def down() -> None:
        raise ConnectionError("still down")

    started = time.monotonic()
    with pytest.raises(ConnectionError, match="still down"):
        policy.call(down, (ConnectionError,))
    assert 0.3 < time.monotonic() - started < 1.5
    with pytest.raises(ValueError):  # not transient: no retry
        policy.call(lambda: int("x"), (ConnectionError,))


def test_the_workers_wait_for_redis_and_bound_their_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """Publishing (retries, the next stage, a chord's callback) and storing results wait about
    the retry deadline for Redis; a worker reconnects for as long as it takes; chords count
    their members through the backend that waits; a prefork child is replaced above the memory
    limit."""
    from workers.app import PUBLISH_RETRY_POLICY, app
    from workers.backend import PatientRedisBackend
    from workers.broker import QoS

    conf = app.conf
    policy = RetryPolicy.from_settings()
    waited, interval = 0.0, PUBLISH_RETRY_POLICY["interval_start"]
    for _ in range(PUBLISH_RETRY_POLICY["max_retries"]):
        waited += interval
        interval = min(interval + PUBLISH_RETRY_POLICY["interval_step"], PUBLISH_RETRY_POLICY["interval_max"])
    assert policy.deadline_s <= waited <= policy.deadline_s + 60
    assert conf.task_publish_retry and conf.task_publish_retry_policy == PUBLISH_RETRY_POLICY
    assert conf.broker_connection_max_retries is None and conf.result_backend_always_retry
    assert isinstance(app.backend, PatientRedisBackend)
    with app.connection_for_write() as connection:  # not connected: the transport is only named
        assert connection.transport.Channel.QoS is QoS
    assert conf.worker_max_memory_per_child == 4096 * 1024  # KiB
    assert conf.worker_proc_alive_timeout >= 60  # a replacement process has time to load its models
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
