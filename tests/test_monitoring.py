"""Monitoring: the dashboard in a real browser (Debian's Chromium via Playwright), /metrics,
Flower behind basic auth; all against the running stack."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import Case, TaskRun
from service.devstack.stack import Stack
from tests.helpers import ARTIFACTS, logged_in_page, submit, wait_done


def clinic_counts(db: Session, clinic_key_id: int) -> dict[str, int]:
    db.expire_all()
    query = select(Case.status, func.count()).where(Case.clinic_id == clinic_key_id).group_by(Case.status)
    rows = {status: count for status, count in db.execute(query).all()}
    icis = db.scalar(
        select(func.count())
        .select_from(TaskRun)
        .join(Case, Case.id == TaskRun.case_id)
        .where(Case.clinic_id == clinic_key_id, TaskRun.stage == "classify", TaskRun.status == "ok")
    )
    return {"total": sum(rows.values()), "done": rows.get("done", 0), "failed": rows.get("failed", 0), "icis": icis}


@pytest.mark.system
def test_dashboard_shows_what_the_database_holds(stack: Stack, db: Session, labelled_dir: Path) -> None:
    key = stack.create_clinic("Clinic Dashboard")
    unauthenticated = httpx.get(f"{stack.api_url}/dashboard/data", timeout=30)
    assert unauthenticated.status_code == 401
    names = ["original_2.json", "original_106.json", "original_107c.json"]
    case_ids = []
    with logged_in_page(f"{stack.api_url}/dashboard", key, 1400, 1000) as page:
        page.wait_for_selector("body[data-loaded='1']", timeout=30_000)
        # the batch runs while the page is open
        case_ids = [
            submit(stack, key, [labelled_dir / "mci" / name], reference=f"D-{i}") for i, name in enumerate(names)
        ]
        wait_done(stack, key, case_ids)
        expected = clinic_counts(db, db.scalar(select(Case.clinic_id).where(Case.id == case_ids[0])))
        assert expected["done"] == 3 and expected["icis"] > 100
        page.wait_for_function(
            "expected => document.getElementById('cases-done').textContent === String(expected.done)"
            " && document.getElementById('icis-day').textContent === String(expected.icis)",
            arg=expected,
            timeout=30_000,
        )
        shown = {
            "total": int(page.text_content("#cases-total")),
            "done": int(page.text_content("#cases-done")),
            "failed": int(page.text_content("#cases-failed")),
            "icis": int(page.text_content("#icis-day")),
        }
        assert shown == expected
        assert "gpu0@" in page.text_content("#workers") and "cpu@" in page.text_content("#workers")
        assert "segment" in page.text_content("#latency")
        assert page.get_attribute("a[target=_blank]", "href") == stack.flower_url
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000


def scrape(stack: Stack) -> dict:
    """/metrics with the stack's bearer token, parsed."""
    response = httpx.get(
        f"{stack.api_url}/metrics", headers={"Authorization": f"Bearer {stack.config.metrics_token}"}, timeout=30
    )
    assert response.status_code == 200, response.text
    return {f.name: f for f in text_string_to_metric_families(response.text)}


def stage_counts(families: dict) -> dict[str, float]:
    histogram = families["karyoflow_stage_duration_seconds"]
    return {s.labels["stage"]: s.value for s in histogram.samples if s.name.endswith("_count")}


@pytest.mark.system
def test_metrics_histograms_count_the_task_runs(stack: Stack, db: Session, labelled_dir: Path) -> None:
    """A case's task runs, as SQL has them, are what the running totals add between two scrapes."""
    key = stack.create_clinic("Clinic Metrics")
    before = scrape(stack)
    case_id = submit(stack, key, [labelled_dir / "mci" / "original_1.json"])
    wait_done(stack, key, [case_id])
    after = scrape(stack)
    db.expire_all()
    query = select(TaskRun.stage, func.count()).where(TaskRun.case_id == case_id, TaskRun.status == "ok")
    expected = {stage: count for stage, count in db.execute(query.group_by(TaskRun.stage)).all()}
    assert set(expected) == {"segment", "classify", "assemble"} and expected["classify"] > 30
    added = {stage: after_count - stage_counts(before)[stage] for stage, after_count in stage_counts(after).items()}
    assert added == expected
    ok_runs = {s.labels["stage"]: s.value for s in after["karyoflow_tasks"].samples if s.labels["status"] == "ok"}
    assert all(ok_runs[stage] == stage_counts(after)[stage] for stage in expected)  # the two views agree
    histogram = after["karyoflow_stage_duration_seconds"]
    infinite = {s.labels["stage"]: s.value for s in histogram.samples if s.labels.get("le") == "+Inf"}
    assert infinite == stage_counts(after)
    cases = {s.labels["status"]: s.value for s in after["karyoflow_cases"].samples}
    assert cases["done"] == db.scalar(select(func.count()).select_from(Case).where(Case.status == "done"))
    assert {s.labels["queue"] for s in after["karyoflow_queue_depth"].samples} == {"segment", "classify", "assemble"}


@pytest.mark.system
def test_metrics_refuse_anonymous_scrapes_on_the_api_and_flower(stack: Stack) -> None:
    url = f"{stack.api_url}/metrics"
    anonymous = httpx.get(url, timeout=30)
    assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"] == "Bearer"
    assert "karyoflow_cases" not in anonymous.text
    for authorization in ("Bearer wrong-token", f"Basic {stack.config.metrics_token}", stack.config.metrics_token):
        assert httpx.get(url, headers={"Authorization": authorization}, timeout=30).status_code == 401
    assert "karyoflow_cases" in scrape(stack)
    for page in ("/metrics", "/healthcheck", "/api/workers"):
        refused = httpx.get(f"{stack.flower_url}{page}", timeout=30)
        assert refused.status_code == 401, (page, refused.status_code)
        assert "flower_" not in refused.text and "celery" not in refused.text.lower()
    auth = (stack.config.flower_user, stack.config.flower_password)
    flower_metrics = httpx.get(f"{stack.flower_url}/metrics", auth=auth, timeout=30)
    assert flower_metrics.status_code == 200 and "flower_" in flower_metrics.text


@pytest.mark.system
def test_flower_needs_credentials_and_lists_the_workers(stack: Stack) -> None:
    assert httpx.get(f"{stack.flower_url}/api/workers", timeout=30).status_code == 401
    auth = (stack.config.flower_user, stack.config.flower_password)
    assert httpx.get(f"{stack.flower_url}/api/workers", auth=(auth[0], "wrong"), timeout=30).status_code == 401
    workers = httpx.get(f"{stack.flower_url}/api/workers", params={"refresh": "true"}, auth=auth, timeout=60)
    assert workers.status_code == 200
    names = set(workers.json())
    assert any(n.startswith("gpu0@") for n in names) and any(n.startswith("cpu@") for n in names)


@pytest.mark.unit
def test_throughput_summary_figures() -> None:
    """The arithmetic of `karyo throughput` on made-up finished cases (no stack needed)."""
    from service.client.throughput import throughput_summary

    def case(status: str, seconds: float) -> dict:
        return {
            "status": status,
            "created_at": "2026-11-26T10:00:00+00:00",
            "finished_at": f"2026-11-26T10:00:{seconds:06.3f}+00:00",
            "images": [{}],
        }

    cases = [case("done", 4.0), case("done", 10.0), case("done", 7.5), case("failed", 1.0)]
    stages = ("segment", "straighten", "classify", "assemble")
    reports = [{"timings_ms": dict(zip(stages, ms, strict=True))} for ms in ((1000, 50, 400, 30), (3000, 70, 600, 50))]
    summary = throughput_summary(cases, reports, wall_s=12.0, submit_s=0.5)
    assert (summary["done"], summary["failed"], summary["images"]) == (3, 1, 3)
    assert summary["images_per_hour"] == 900.0  # 3 MCIs in 12 s
    assert summary["latency_s"] == {"p50": 7.5, "p95": 10.0, "max": 10.0}  # failed cases left out
    assert summary["compute_ms_per_image"] == dict(zip(stages, (2000, 60, 500, 40), strict=True))
    assert summary["compute_s_per_image"] == 2.6


@pytest.mark.unit
def test_throughput_comparison_figures() -> None:
    from service.client.latency import _percentiles
    from service.client.throughput import comparison

    in_process = {"images_per_hour": 3000.0, "compute_s_per_image": 1.2}
    service = {"images_per_hour": 2700.0, "compute_s_per_image": 1.44}
    assert comparison(in_process, service) == {"images_per_hour": 0.9, "compute_per_image": 1.2}
    figures = _percentiles([0.010, 0.012, 0.011, 0.250] + [0.010] * 16)
    assert (figures["p50"], figures["max"], figures["count"]) == (10.0, 250.0, 20)
    assert figures["p95"] == 12.0  # nearest rank: 19 x 0.95 = 18.05 -> the 19th of 20
    assert _percentiles([])["p95"] is None


@pytest.mark.system
def test_throughput_command_against_the_stack(stack: Stack, labelled_dir: Path, tmp_path: Path, capsys) -> None:
    from service.cli import main as karyo

    key = stack.create_clinic("Clinic Throughput")
    client = ["--api", stack.api_url, "--key", key]
    out = tmp_path / "throughput.json"
    mci = labelled_dir / "mci" / "original_4.json"  # labelme JSON: its embedded MCI is uploaded as PNG
    assert karyo(["throughput", str(mci), "--cases", "2", "--json", str(out), *client]) == 0
    summary = json.loads(out.read_text())
    assert (summary["cases"], summary["done"], summary["failed"], summary["images"]) == (2, 2, 0, 2)
    assert summary["images_per_hour"] == pytest.approx(2 / summary["wall_s"] * 3600, rel=2e-3)  # wall_s is rounded
    # one clock (this machine): no case took longer than the run that waited for it
    assert 0 < summary["latency_s"]["p50"] <= summary["latency_s"]["max"] <= summary["wall_s"] + 1
    assert all(ms > 0 for ms in summary["compute_ms_per_image"].values())
    assert "2/2 cases done" in capsys.readouterr().out
    listed = httpx.get(f"{stack.api_url}/v1/cases", params={"reference": "throughput-2"}, headers={"X-API-Key": key})
    assert len(listed.json()["items"]) == 1
    compared = tmp_path / "compared.json"
    args = ["--reference", "erased", "--delete", "--compare", "--json", str(compared)]
    assert karyo(["throughput", str(mci), "--cases", "1", *args, *client]) == 0
    erased = httpx.get(f"{stack.api_url}/v1/cases", params={"reference": "erased-1"}, headers={"X-API-Key": key})
    assert erased.json()["items"] == []  # measured, then erased
    figures = json.loads(compared.read_text())
    local = figures["in_process"]
    assert local["images"] == 1 and all(ms > 0 for ms in local["compute_ms_per_image"].values())
    assert figures["ratio"]["images_per_hour"] == pytest.approx(
        figures["images_per_hour"] / local["images_per_hour"], rel=1e-2
    )
    assert "service / in process:" in capsys.readouterr().out
    assert karyo(["throughput", str(mci), "--cases", "0", *client]) == 2
    assert "--cases must be at least 1" in capsys.readouterr().err
    assert karyo(["throughput", str(tmp_path / "missing.png"), *client]) == 2


@pytest.mark.system
def test_latency_command_against_the_stack(stack: Stack, labelled_dir: Path, tmp_path: Path, capsys) -> None:
    from service.cli import main as karyo

    key = stack.create_clinic("Clinic Latency")
    out = tmp_path / "latency.json"
    mci = labelled_dir / "mci" / "original_7.json"
    command = ["latency", str(mci), "--uploads", "2", "--rounds", "1", "--idle", "5", "--json", str(out)]
    assert karyo([*command, "--api", stack.api_url, "--key", key]) == 0
    figures = json.loads(out.read_text())
    assert figures["idle_ms"]["count"] == 5 and 0 < figures["idle_ms"]["p50"] <= figures["idle_ms"]["max"]
    assert figures["concurrent_uploads"] == 2
    assert figures["uploads_ms"]["count"] == 2 and 0 < figures["uploads_ms"]["p50"] <= figures["uploads_ms"]["max"]
    listed = httpx.get(f"{stack.api_url}/v1/cases", params={"reference": "latency-1-2"}, headers={"X-API-Key": key})
    assert len(listed.json()["items"]) == 1  # the uploads were real cases
    assert "GET /v1/cases idle" in capsys.readouterr().out
    assert karyo(["latency", str(mci), "--uploads", "0", "--api", stack.api_url, "--key", key]) == 2
