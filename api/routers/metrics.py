"""`/metrics` for Prometheus: per-stage task counters and latency histograms, queue depths, cases
by status. Computed at scrape time from the database (the durable history, the same for every
API replica and worker) and Redis, so restarts lose nothing. Aggregates only: no case data.
Restrict it at the network level (it is meant for the monitoring host)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from sqlalchemy import case, func, select

from api.monitoring import STAGES, queue_depths
from db.models import CASE_STATUSES, Case, TaskRun
from db.session import session_scope
from db.status import TaskRunStatus
from infra.settings import get_settings

router = APIRouter(tags=["monitoring"])
BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class ServiceCollector:
    def collect(self):
        with session_scope() as session:
            tasks = CounterMetricFamily("karyoflow_tasks", "Task runs by stage and outcome", labels=["stage", "status"])
            for stage, status, count in session.execute(
                select(TaskRun.stage, TaskRun.status, func.count()).group_by(TaskRun.stage, TaskRun.status)
            ).all():
                tasks.add_metric([stage, status], count)
            yield tasks

            latency = HistogramMetricFamily(
                "karyoflow_stage_duration_seconds", "Duration of successful task runs by stage", labels=["stage"]
            )
            columns = [func.sum(case((TaskRun.duration_ms <= b * 1000, 1), else_=0)) for b in BUCKETS_S]
            rows = session.execute(
                select(TaskRun.stage, func.count(), func.coalesce(func.sum(TaskRun.duration_ms), 0), *columns)
                .where(TaskRun.status == TaskRunStatus.OK)
                .group_by(TaskRun.stage)
            ).all()
            found = {row[0]: row for row in rows}
            for stage in STAGES:
                row = found.get(stage)
                count, total_ms = (int(row[1]), float(row[2])) if row else (0, 0.0)
                cumulative = [int(v or 0) for v in row[3:]] if row else [0] * len(BUCKETS_S)
                buckets = [(str(b), c) for b, c in zip(BUCKETS_S, cumulative, strict=True)] + [("+Inf", count)]
                latency.add_metric([stage], buckets, total_ms / 1000)
            yield latency

            cases = GaugeMetricFamily("karyoflow_cases", "Cases by status", labels=["status"])
            by_status = dict(session.execute(select(Case.status, func.count()).group_by(Case.status)).all())
            for status in CASE_STATUSES:
                cases.add_metric([status], by_status.get(status, 0))
            yield cases

        depths = GaugeMetricFamily("karyoflow_queue_depth", "Messages waiting per Celery queue", labels=["queue"])
        for queue, depth in queue_depths(get_settings().redis_url).items():
            if depth is not None:
                depths.add_metric([queue], depth)
        yield depths


registry = CollectorRegistry(auto_describe=False)
registry.register(ServiceCollector())


@router.get("/metrics", include_in_schema=False)
def metrics() -> Response:
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
