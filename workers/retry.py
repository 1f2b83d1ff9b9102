"""One retry policy for every transient error of the workers (the database, Redis or object
storage unreachable): capped exponential backoff with equal jitter, and a deadline counted from
the task's first try, so that a minute-long outage is waited out and a permanent one ends in a
failure with its reason rather than in an endless loop.

    delay(n) = d/2 + uniform(0, d/2),  d = min(cap, first * 2**n)

With the defaults (first 1 s, cap 30 s, deadline 300 s) the waits are about 1, 2, 4, 8, 16, 30,
30, ... seconds: an outage is noticed again at most 30 s after it ends, and a task keeps trying
for five minutes.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from infra.settings import Settings, get_settings

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    first_s: float = 1.0
    cap_s: float = 30.0
    deadline_s: float = 300.0

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> RetryPolicy:
        settings = settings or get_settings()
        return cls(settings.retry_first_s, settings.retry_cap_s, settings.retry_deadline_s)

    def step(self, attempt: int) -> float:
        """The un-jittered wait before retry `attempt` + 1 (attempt 0: the first retry)."""
        return min(self.cap_s, self.first_s * 2 ** min(attempt, 32))

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        step = self.step(attempt)
        return step / 2 + (rng or random).uniform(0, step / 2)

    def next_delay(self, attempt: int, first_try: float, now: float | None = None) -> float | None:
        """The wait before the next try, or None when that try would start past the deadline
        (`first_try`, `now`: time.time())."""
        now = time.time() if now is None else now
        wait = self.delay(attempt)
        if now + wait > first_try + self.deadline_s:
            return None
        return wait

    def call(
        self,
        fn: Callable[[], T],
        transient: tuple[type[BaseException], ...],
        on_retry: Callable[[BaseException, float], None] | None = None,
        deadline_s: float | None = None,
    ) -> T:
        """`fn()` retried in place while it raises one of `transient`, until the deadline
        (`deadline_s` instead of the policy's, when given); then the last error is raised."""
        first_try, attempt = time.time(), 0
        policy = self if deadline_s is None else RetryPolicy(self.first_s, self.cap_s, deadline_s)
        while True:
            try:
                return fn()
            except transient as error:
                wait = policy.next_delay(attempt, first_try)
                if wait is None:
                    raise
                if on_retry is not None:
                    on_retry(error, wait)
                time.sleep(wait)
                attempt += 1
