"""The intake's answers cross a process boundary as plain data: every error a new case can meet is
answered through them exactly as the API answers the error itself (status, detail, refused
fields), and what crosses pickles."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import redis
import urllib3
from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient
from minio.error import S3Error
from sqlalchemy.exc import DataError, OperationalError

from api.errors import Unavailable, install_error_handling, invalid_field
from api.intake import NewCase, Refusal, refusal_of
from api.schemas import CaseCreated
from api.uploads import UploadedImage

pytestmark = pytest.mark.unit


def _s3_error(code: str) -> S3Error:
    return S3Error(None, code, "message", "resource", "request", "host")


ERRORS = {
    "a route's refusal": HTTPException(415, "a.gif: GIF images are not accepted (PNG, JPEG, TIFF or BMP)"),
    "a refused field": invalid_field(("body", "files", 0, "filename"), "file 0's name: too long"),
    "a value the database cannot store": DataError("INSERT ...", {}, Exception("value too long")),
    "storage unreachable": Unavailable("object storage unavailable, nothing was stored; try again shortly"),
    "the database down": OperationalError("SELECT 1", {}, Exception("connection refused")),
    "object storage down": urllib3.exceptions.MaxRetryError(None, "/bucket", "refused"),
    "object storage busy": _s3_error("SlowDown"),
    "object storage misconfigured": _s3_error("AccessDenied"),
    "the task queue down": redis.exceptions.ConnectionError("refused"),
    "a bug": ValueError("a bug"),
}


def _answers(error: Exception) -> tuple[dict, dict]:
    """The API's answer to `error` raised in a route, and to the intake's refusal of it."""
    app = FastAPI()
    install_error_handling(app)

    @app.get("/direct")
    def direct() -> None:
        raise error

    @app.get("/through-intake")
    def through_intake() -> None:
        refusal = pickle.loads(pickle.dumps(refusal_of(error, "test-request")))
        raise refusal.exception()

    client = TestClient(app, raise_server_exceptions=False)
    answers = []
    for path in ("/direct", "/through-intake"):
        response = client.get(path)
        body = response.json()
        answers.append({"status": response.status_code, "detail": body["detail"], "errors": body["errors"]})
    return answers[0], answers[1]


@pytest.mark.parametrize("what", ERRORS)
def test_a_refusal_is_answered_as_the_api_answers_the_error(what: str) -> None:
    direct, through_intake = _answers(ERRORS[what])
    if direct["status"] == 500:  # both name only the request id to quote
        assert through_intake["status"] == 500 and "request id" in through_intake["detail"]
    else:
        assert through_intake == direct


def test_refusals_have_the_statuses_a_client_acts_on() -> None:
    statuses = {what: refusal_of(error, "r").status for what, error in ERRORS.items()}
    assert statuses == {
        "a route's refusal": 415,
        "a refused field": 422,
        "a value the database cannot store": 422,
        "storage unreachable": 503,
        "the database down": 503,
        "object storage down": 503,
        "object storage busy": 503,
        "object storage misconfigured": 500,
        "the task queue down": 503,
        "a bug": 500,
    }
    refused = refusal_of(ERRORS["a refused field"], "r")
    assert refused.errors == ({"loc": ("body", "files", 0, "filename"), "msg": "file 0's name: too long",
                               "type": "value_error"},)  # fmt: skip


def test_what_crosses_the_process_boundary_pickles() -> None:
    new = NewCase(3, 7, "ref-1", "g", (UploadedImage("a.png", b"\x89PNG..."),), "req-1")
    assert pickle.loads(pickle.dumps(new)) == new
    created = CaseCreated(id="c1", status="received", images=1)
    assert pickle.loads(pickle.dumps(created)) == created
    refusal = Refusal(413, "a.png: larger than 10 bytes")
    assert pickle.loads(pickle.dumps(refusal)) == refusal


def test_the_intake_process_loads_no_analysis_code() -> None:
    """What an intake process imports (api.intake and the Celery app it enqueues with) leaves
    torch out: about 80 MB of private memory per process instead of about 450 MB."""
    imported = subprocess.run(
        [sys.executable, "-c", "import sys, api.intake, workers.app; print(*sys.modules)"],
        capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1],
    ).stdout  # fmt: skip
    modules = set(imported.split())
    assert "api.intake" in modules and "workers.app" in modules
    assert not {"torch", "torchvision", "karyoflow.pipeline", "workers.tasks"} & modules
