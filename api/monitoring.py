"""Key figures of the running service, from the database (durable history) and Redis (queues).

Used by the dashboard (`/dashboard`), `/metrics` and `karyo stack status`, so all three show the
same numbers. Case figures are per clinic when a clinic is given; queues and workers are shared.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import CASE_STATUSES, Case, TaskRun
from db.status import CaseStatus, Stage, TaskRunStatus

STAGES = tuple(stage.value for stage in Stage)
QUEUES = STAGES  # one Celery queue per stage


def queue_depths(redis_url: str) -> dict[str, int | None]:
    import redis

    try:
        client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
        return {queue: int(client.llen(queue)) for queue in QUEUES}
    except redis.RedisError:
        return {queue: None for queue in QUEUES}


@lru_cache
def _control_probe(redis_url: str):
    """A Celery app that only talks to the broker: pinging workers needs no task code."""
    from celery import Celery

    return Celery(broker=redis_url, backend=redis_url)


def workers_online(redis_url: str, timeout: float = 1.0) -> list[str]:
    """Names of the workers that answer a ping through the broker at `redis_url`."""
    try:
        replies = _control_probe(redis_url).control.ping(timeout=timeout) or []
    except Exception:  # broker down: nobody is reachable
        return []
    return sorted(name for reply in replies for name in reply)


def _as_utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)  # SQLite drops the zone


def _series(times: list[datetime], now: datetime, bucket: timedelta, buckets: int) -> list[float]:
    """Events per minute in `buckets` consecutive buckets ending now (oldest first)."""
    counts = [0] * buckets
    start = now - bucket * buckets
    for t in times:
        index = int((_as_utc(t) - start) / bucket)
        if 0 <= index < buckets:
            counts[index] += 1
    per_minute = bucket / timedelta(minutes=1)
    return [round(c / per_minute, 3) for c in counts]


def case_figures(session: Session, clinic_id: int | None, now: datetime | None = None) -> dict:
    now = now or datetime.now(UTC)
    day_ago = now - timedelta(days=1)
    own = [Case.clinic_id == clinic_id] if clinic_id is not None else []
    runs = select(TaskRun).where(TaskRun.finished_at >= day_ago)
    if clinic_id is not None:
        runs = runs.join(Case, Case.id == TaskRun.case_id).where(*own)
    by_status = dict(session.execute(select(Case.status, func.count()).where(*own).group_by(Case.status)).all())
    finished = session.execute(select(Case.finished_at, Case.status).where(Case.finished_at >= day_ago, *own)).all()
    done_times = [t for t, status in finished if status == CaseStatus.DONE]
    failed_day = sum(1 for _, status in finished if status == CaseStatus.FAILED)
    task_runs = session.scalars(runs).all()
    ici_times = [r.finished_at for r in task_runs if r.stage == Stage.CLASSIFY and r.status == TaskRunStatus.OK]
    latency = {}
    for stage in STAGES:
        durations = [r.duration_ms for r in task_runs if r.stage == stage and r.status == TaskRunStatus.OK]
        latency[stage] = {
            "count": len(durations),
            "p50_ms": round(float(np.percentile(durations, 50)), 1) if durations else None,
            "p95_ms": round(float(np.percentile(durations, 95)), 1) if durations else None,
        }
    failed = select(Case).where(Case.status == CaseStatus.FAILED, *own)
    failures_query = failed.order_by(Case.finished_at.desc()).limit(10)
    failures = [
        {"case": c.id, "reference": c.reference, "at": c.finished_at.isoformat() if c.finished_at else None,
         "reason": c.error or ""}
        for c in session.scalars(failures_query).all()
    ]  # fmt: skip
    hour_done = sum(1 for t in done_times if _as_utc(t) >= now - timedelta(hours=1))
    return {
        "generated_at": now.isoformat(),
        "cases_by_status": {status: int(by_status.get(status, 0)) for status in CASE_STATUSES},
        "cases_total": int(sum(by_status.values())),
        "cases_done_last_hour": hour_done,
        "cases_done_last_day": len(done_times),
        "icis_last_day": len(ici_times),
        "failure_rate_last_day": round(failed_day / (failed_day + len(done_times)), 4) if finished else 0.0,
        "cases_per_minute_hour": _series(done_times, now, timedelta(minutes=1), 60),
        "icis_per_minute_hour": _series(ici_times, now, timedelta(minutes=1), 60),
        "cases_per_minute_day": _series(done_times, now, timedelta(minutes=10), 144),
        "icis_per_minute_day": _series(ici_times, now, timedelta(minutes=10), 144),
        "stage_latency": latency,
        "latest_failures": failures,
    }
