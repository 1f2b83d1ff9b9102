"""The API's one error mapping (api/errors.py) on a small app of its own that raises what the real
routes meet (driver errors carrying SQL, hosts and secrets), the OpenAPI document of the real
app, and the running task-run totals behind /metrics (api/task_totals.py) on SQLite in memory."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import psycopg
import pytest
import urllib3
from fastapi import FastAPI, HTTPException, Query
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, delete, func, select
from sqlalchemy.exc import DataError, OperationalError
from sqlalchemy.orm import Session

from api.errors import Unavailable, install_error_handling, invalid_field
from api.fields import PRINTABLE, BooleanParam, DateTimeParam, text_problem
from api.task_totals import BUCKETS_S, LOOKBACK, TaskRunTotals
from db.models import Base, Case, Clinic, TaskRun

pytestmark = pytest.mark.unit

SECRET = "s3cr3t-Pa55"
SQL = f"INSERT INTO images (filename) VALUES ('x') -- postgresql://karyoflow:{SECRET}@db.internal:5432"
LEAKS = ("INSERT", "postgresql://", SECRET, "db.internal", "5432", "10.0.0.7", "Traceback")


def _app() -> FastAPI:
    app = FastAPI()

    @app.get("/database-down")
    def database_down() -> None:
        raise OperationalError(SQL, {"filename": SECRET}, ConnectionRefusedError("db.internal:5432 refused"))

    @app.get("/unstorable")
    def unstorable() -> None:
        raise DataError(SQL, {"filename": SECRET}, psycopg.DataError("PostgreSQL text fields cannot contain NUL"))

    @app.get("/storage-down")
    def storage_down() -> None:
        raise urllib3.exceptions.MaxRetryError(None, f"http://10.0.0.7:9000/bucket?key={SECRET}")

    @app.get("/storage-down-said")
    def storage_down_said() -> None:
        try:
            raise ConnectionRefusedError(f"10.0.0.7:9000 {SECRET}")
        except ConnectionRefusedError as error:
            raise Unavailable("object storage unavailable; try again shortly") from error

    @app.get("/bug")
    def bug() -> None:
        raise RuntimeError(f"a bug holding {SQL}")

    @app.get("/refused")
    def refused() -> None:
        raise HTTPException(409, "case x is received: delete it once it is done or failed")

    @app.get("/own-check")
    def own_check() -> None:
        raise invalid_field(("query", "cursor"), "not a cursor this service gave out")

    @app.get("/text")
    def text(value: str = Query(max_length=5, pattern=PRINTABLE)) -> dict:
        return {"value": value}

    @app.get("/query")
    def query(since: DateTimeParam | None = None, flag: BooleanParam | None = None) -> dict:
        return {"since": since, "flag": flag}

    install_error_handling(app)
    return app


@pytest.mark.parametrize(
    ("path", "status", "says"),
    [
        ("/database-down", 503, "database unavailable; try again shortly"),
        ("/unstorable", 422, "cannot be stored"),
        ("/storage-down", 503, "object storage unavailable; try again shortly"),
        ("/storage-down-said", 503, "object storage unavailable; try again shortly"),
        ("/bug", 500, "internal error"),
        ("/refused", 409, "delete it once it is done or failed"),
        ("/own-check", 422, "not a cursor"),
        ("/text?value=a%00b", 422, "should match pattern"),
        ("/text?value=abcdef", 422, "at most 5 characters"),
        ("/query?since=0.5", 422, "RFC 3339"),
        ("/query?since=2026-12-03", 422, "RFC 3339"),
        ("/query?flag=yes", 422, "true or false"),
        ("/query?flag=0", 422, "true or false"),
    ],
)
def test_every_error_has_one_shape_and_no_internals(path: str, status: int, says: str) -> None:
    client = TestClient(_app(), raise_server_exceptions=False)
    response = client.get(path)
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"detail", "request_id", "errors"} and says in body["detail"]
    assert body["request_id"] == response.headers["X-Request-ID"] and len(body["request_id"]) >= 8
    text = response.text.replace(body["request_id"], "")  # a random hex id may hold "5432"
    assert not [leak for leak in LEAKS if leak in text]
    if status == 500:
        assert body["request_id"] in body["detail"]  # the id to quote
    if path.startswith(("/text", "/own-check", "/query")):
        assert body["errors"] and body["errors"][0]["loc"][0] == "query"


def test_the_request_id_is_on_every_response_and_a_callers_is_kept() -> None:
    client = TestClient(_app())
    valid = client.get("/query", params={"since": "2026-12-03T09:00:00.5+01:00", "flag": "false"})
    assert valid.json() == {"since": "2026-12-03T09:00:00.500000+01:00", "flag": False}
    ok = client.get("/text", params={"value": "abc"})
    assert ok.status_code == 200 and len(ok.headers["X-Request-ID"]) == 32
    assert client.get("/text", params={"value": "abc"}).headers["X-Request-ID"] != ok.headers["X-Request-ID"]
    kept = client.get("/text", params={"value": "abc"}, headers={"X-Request-ID": "lab-4711-abcdef"})
    assert kept.headers["X-Request-ID"] == "lab-4711-abcdef"
    replaced = client.get("/text", params={"value": "abc"}, headers={"X-Request-ID": "x;<script>"})
    assert replaced.headers["X-Request-ID"] != "x;<script>" and len(replaced.headers["X-Request-ID"]) == 32


def test_text_problems() -> None:
    assert text_problem("case-17 Müller", 200) is None
    assert "at most 3" in text_problem("abcd", 3)
    for bad in ("a\x00b", "line\nbreak", "tab\there", "del\x7f"):
        assert "control characters" in text_problem(bad, 200)


def test_the_openapi_document_lists_every_error_in_one_shape() -> None:
    from api.main import app

    document = TestClient(app).get("/openapi.json").json()
    schemas = document["components"]["schemas"]
    assert "ErrorBody" in schemas and "HTTPValidationError" not in schemas
    operations = {
        (method.upper(), path): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }
    assert len(operations) >= 10
    for (method, path), operation in operations.items():
        responses = operation["responses"]
        assert "500" in responses, (method, path)
        for status, response in responses.items():
            assert "X-Request-ID" in response["headers"], (method, path, status)
            if int(status) >= 400 and not (path == "/health/ready" and status == "503"):
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, path, status)
        if path.startswith("/v1/"):
            assert {"401", "422", "503"} <= set(responses), (method, path)
        if "{case_id}" in path:
            assert "404" in responses, (method, path)
    assert {"400", "413", "415"} <= set(operations[("POST", "/v1/cases")]["responses"])
    assert "409" in operations[("DELETE", "/v1/cases/{case_id}")]["responses"]
    assert "409" in operations[("GET", "/v1/cases/{case_id}/karyogram")]["responses"]
    assert set(operations[("GET", "/health")]["responses"]) == {"200", "500"}
    path_parameter = operations[("GET", "/v1/cases/{case_id}")]["parameters"][0]["schema"]
    assert path_parameter["maxLength"] == 36 and path_parameter["pattern"] == PRINTABLE


# -- the task-run totals of /metrics --


def _expected(session: Session) -> tuple[dict, dict]:
    """What one GROUP BY over every row gives: runs per (stage, status), histograms per stage."""
    runs = {(stage, status): n for stage, status, n in session.execute(
        select(TaskRun.stage, TaskRun.status, func.count()).group_by(TaskRun.stage, TaskRun.status))}  # fmt: skip
    durations: dict[str, list] = {}
    for stage, ms in session.execute(select(TaskRun.stage, TaskRun.duration_ms).where(TaskRun.status == "ok")):
        durations.setdefault(stage, []).append(ms)
    histograms = {
        stage: (len(values), round(sum(values) / 1000, 6), [sum(v <= b * 1000 for v in values) for b in BUCKETS_S])
        for stage, values in durations.items()
    }
    return runs, histograms


def _seen(totals: TaskRunTotals, session: Session) -> tuple[dict, dict]:
    runs, durations = totals.update(session)
    return runs, {stage: (d.count, round(d.total_s, 6), d.cumulative) for stage, d in durations.items()}


def _add_runs(session: Session, case_id: str, n: int, rng: random.Random, first_id: int | None = None) -> None:
    now = datetime.now(UTC)
    for i in range(n):
        session.add(
            TaskRun(
                id=None if first_id is None else first_id + i,
                case_id=case_id,
                stage=rng.choice(["segment", "classify", "assemble"]),
                task_id=f"t{i}",
                status=rng.choice(["ok", "ok", "ok", "retry", "failed"]),
                started_at=now,
                finished_at=now,
                duration_ms=rng.choice([5.0, 40.0, 300.0, 2000.0, 70000.0]),
            )
        )
    session.commit()


def test_task_run_totals_follow_the_rows_and_never_go_down() -> None:
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    rng = random.Random(7)
    with Session(engine) as session:
        session.add(Clinic(id=1, name="c"))
        session.add(Case(id="case-1", clinic_id=1))
        session.commit()
        _add_runs(session, "case-1", LOOKBACK + 500, rng)  # more than the lookback: the aggregate pass
        totals = TaskRunTotals()
        assert _seen(totals, session) == _expected(session)
        assert totals.aggregated_up_to == 500
        _add_runs(session, "case-1", 120, rng)  # counted row by row
        assert _seen(totals, session) == _expected(session)
        assert _seen(totals, session) == _expected(session)  # a scrape with nothing new adds nothing
        # a row numbered below the newest but committed after the scrape that saw the newest
        _add_runs(session, "case-1", 10, rng)
        late = session.scalar(select(func.max(TaskRun.id))) - 3
        session.execute(delete(TaskRun).where(TaskRun.id == late))
        session.commit()
        assert _seen(totals, session) == _expected(session)
        _add_runs(session, "case-1", 1, rng, first_id=late)
        assert _seen(totals, session) == _expected(session)
        # erased task runs: counters keep what they counted
        counted = _seen(totals, session)
        session.execute(delete(TaskRun).where(TaskRun.id <= 700))
        session.commit()
        assert _seen(totals, session) == counted
        assert _seen(TaskRunTotals(), session) == _expected(session)  # a new process starts from the rows
    engine.dispose()


def test_metrics_want_the_configured_bearer_token() -> None:
    from api.routers.metrics import metrics_scraper
    from infra.settings import Settings

    for unset in (None, ""):
        with pytest.raises(HTTPException) as refused:
            metrics_scraper(Settings(metrics_token=unset), "Bearer ")
        assert refused.value.status_code == 403  # no token configured: nobody scrapes
    configured = Settings(metrics_token="t0ken-for-prometheus")
    for authorization in (None, "", "Bearer", "Bearer wrong", "Basic t0ken-for-prometheus", "t0ken-for-prometheus"):
        with pytest.raises(HTTPException) as refused:
            metrics_scraper(configured, authorization)
        assert refused.value.status_code == 401 and refused.value.headers == {"WWW-Authenticate": "Bearer"}
    assert metrics_scraper(configured, "Bearer t0ken-for-prometheus") is None
    assert metrics_scraper(configured, "bearer t0ken-for-prometheus") is None  # the scheme is case-insensitive
