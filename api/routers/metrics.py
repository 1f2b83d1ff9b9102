"""`/metrics` for Prometheus, behind a bearer token (`KARYO_METRICS_TOKEN`; Prometheus's
`authorization` setting). Unset, the route refuses every scrape. It shows figures of every
clinic (cases by status), so only the token's holder sees them.

Per-stage task counters and latency histograms (running totals advanced by the task runs added
since the last scrape: api/task_totals.py), queue depths (Redis LLEN), cases by status (one
GROUP BY over an indexed column). Aggregates only: no case data."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from sqlalchemy import func, select

from api.monitoring import STAGES, queue_depths
from api.task_totals import BUCKETS_S, Durations, TaskRunTotals
from db.models import CASE_STATUSES, Case
from db.session import session_scope
from infra.settings import Settings, get_settings

router = APIRouter(tags=["monitoring"])
totals = TaskRunTotals()


class ServiceCollector:
    def collect(self):
        with session_scope() as session:
            runs, durations_by_stage = totals.update(session)
            by_status = dict(session.execute(select(Case.status, func.count()).group_by(Case.status)).all())
        tasks = CounterMetricFamily("karyoflow_tasks", "Task runs by stage and outcome", labels=["stage", "status"])
        for (stage, status), count in sorted(runs.items()):
            tasks.add_metric([stage, status], count)
        yield tasks

        latency = HistogramMetricFamily(
            "karyoflow_stage_duration_seconds", "Duration of successful task runs by stage", labels=["stage"]
        )
        for stage in STAGES:
            durations = durations_by_stage.get(stage, Durations())
            buckets = [(str(b), c) for b, c in zip(BUCKETS_S, durations.cumulative, strict=True)]
            latency.add_metric([stage], [*buckets, ("+Inf", durations.count)], durations.total_s)
        yield latency

        cases = GaugeMetricFamily("karyoflow_cases", "Cases by status", labels=["status"])
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


def metrics_scraper(
    settings: Annotated[Settings, Depends(get_settings)], authorization: Annotated[str | None, Header()] = None
) -> None:
    """Only `Authorization: Bearer <KARYO_METRICS_TOKEN>` passes."""
    expected = settings.metrics_token.get_secret_value() if settings.metrics_token else ""
    if not expected:
        raise HTTPException(403, "metrics are off: set KARYO_METRICS_TOKEN and scrape with it as a bearer token")
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise HTTPException(
            401, "a bearer token is needed (KARYO_METRICS_TOKEN)", headers={"WWW-Authenticate": "Bearer"}
        )


@router.get("/metrics", include_in_schema=False, dependencies=[Depends(metrics_scraper)])
def metrics() -> Response:
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
