"""Running totals of the task runs for `/metrics`: runs by stage and status, and a duration
histogram of the successful runs per stage, kept per API process and advanced at each scrape by
the rows added since the last one, so a scrape reads a range of the primary key instead of
aggregating every task run ever recorded.

The first scrape of a process aggregates the rows it finds once (one GROUP BY); later scrapes
read only newer rows. Rows are numbered when inserted but may commit out of order, so the last
`LOOKBACK` ids are read again each time and those already counted are skipped. These are
Prometheus counters: they never go down, also when a case and its task runs are erased, and
restart from the database's figures when the process restarts."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from db.models import TaskRun
from db.status import TaskRunStatus

BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
LOOKBACK = 1000  # ids read again per scrape: far more than can commit out of order


@dataclass
class Durations:
    """A histogram of successful runs: count, sum and cumulative counts per bucket of BUCKETS_S."""

    count: int = 0
    total_s: float = 0.0
    cumulative: list[int] = field(default_factory=lambda: [0] * len(BUCKETS_S))

    def add(self, duration_ms: float) -> None:
        self.count += 1
        self.total_s += duration_ms / 1000
        for index, bound in enumerate(BUCKETS_S):
            if duration_ms <= bound * 1000:
                self.cumulative[index] += 1


@dataclass
class TaskRunTotals:
    runs: Counter[tuple[str, str]] = field(default_factory=Counter)  # (stage, status) -> runs
    durations: dict[str, Durations] = field(default_factory=dict)  # stage -> successful runs
    aggregated_up_to: int | None = None  # ids up to here were counted by the first GROUP BY
    last_id: int = 0
    counted: set[int] = field(default_factory=set)  # ids above the aggregate counted one by one
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def update(self, session: Session) -> tuple[dict[tuple[str, str], int], dict[str, Durations]]:
        """Counts the rows added since the last call; returns copies of the totals (another
        scrape may be updating them meanwhile)."""
        with self.lock:
            if self.aggregated_up_to is None:
                self._aggregate(session)
            floor = max(self.aggregated_up_to or 0, self.last_id - LOOKBACK)
            rows = session.execute(
                select(TaskRun.id, TaskRun.stage, TaskRun.status, TaskRun.duration_ms).where(TaskRun.id > floor)
            ).all()
            for run_id, stage, status, duration_ms in rows:
                if run_id in self.counted:
                    continue
                self.counted.add(run_id)
                self.runs[(stage, status)] += 1
                if status == TaskRunStatus.OK:
                    self.durations.setdefault(stage, Durations()).add(duration_ms)
                self.last_id = max(self.last_id, run_id)
            self.counted = {run_id for run_id in self.counted if run_id > self.last_id - LOOKBACK}
            durations = {
                stage: Durations(d.count, d.total_s, list(d.cumulative)) for stage, d in self.durations.items()
            }
            return dict(self.runs), durations

    def _aggregate(self, session: Session) -> None:
        """Everything up to LOOKBACK ids below the newest, in one pass; the rest goes one by one."""
        newest = session.scalar(select(func.max(TaskRun.id))) or 0
        up_to = max(0, newest - LOOKBACK)
        for stage, status, count in session.execute(
            select(TaskRun.stage, TaskRun.status, func.count())
            .where(TaskRun.id <= up_to)
            .group_by(TaskRun.stage, TaskRun.status)
        ).all():
            self.runs[(stage, status)] += count
        bucket_sums = [func.sum(case((TaskRun.duration_ms <= b * 1000, 1), else_=0)) for b in BUCKETS_S]
        for stage, count, total_ms, *cumulative in session.execute(
            select(TaskRun.stage, func.count(), func.coalesce(func.sum(TaskRun.duration_ms), 0), *bucket_sums)
            .where(TaskRun.status == TaskRunStatus.OK, TaskRun.id <= up_to)
            .group_by(TaskRun.stage)
        ).all():
            self.durations[stage] = Durations(int(count), float(total_ms) / 1000, [int(c or 0) for c in cumulative])
        self.aggregated_up_to = self.last_id = up_to
