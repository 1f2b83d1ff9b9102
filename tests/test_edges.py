"""The API's edges against the running stack (PostgreSQL, which cannot hold a NUL and refuses
over-long values at INSERT): hostile text refused with 422 everywhere, one error shape, no SQL,
host or secret in any body, 503 only for what a retry fixes; schemathesis over every operation
of the OpenAPI document; the task runs name the process that ran them."""

from __future__ import annotations

import base64
import io
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import TaskRun
from infra.storage import ObjectStore
from service.devstack.stack import Stack
from tests.helpers import ARTIFACTS, TIMEOUT_S, client, submit, wait_done, wait_ready

pytestmark = pytest.mark.system

# what a body must never hold: SQL, driver and library names, hosts and ports
LEAKS = ("SELECT", "INSERT", "UPDATE ", "psycopg", "sqlalchemy", "postgresql", "127.0.0.1", "localhost", "Traceback")
SCHEMATHESIS_BUDGET_S = int(os.environ.get("KARYO_SCHEMATHESIS_S", "90"))


def stack_secrets(stack: Stack) -> list[str]:
    c = stack.config
    return [c.s3_secret_key, c.metrics_token, c.flower_password, f":{c.s3_port}", f":{c.redis_port}"]


def assert_clean_error(response: httpx.Response, stack: Stack) -> dict:
    """One error shape, the request id in body and header, and nothing internal in the body."""
    leaked = [text for text in (*LEAKS, *stack_secrets(stack)) if text in response.text]
    assert not leaked, (leaked, response.text)
    body = response.json()
    assert set(body) == {"detail", "request_id", "errors"}, body
    assert body["request_id"] == response.headers["X-Request-ID"]
    return body


def noise_png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (300, 300), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def raw_upload(filename: bytes, data: bytes) -> dict:
    """httpx arguments for a multipart body with one file whose name is sent byte for byte."""
    boundary = b"karyoflow-edge-case"
    body = b"".join([
        b"--" + boundary + b"\r\n",
        b'Content-Disposition: form-data; name="files"; filename="' + filename + b'"\r\n',
        b"Content-Type: image/png\r\n\r\n", data, b"\r\n--" + boundary + b"--\r\n",
    ])  # fmt: skip
    return {"content": body, "headers": {"Content-Type": f"multipart/form-data; boundary={boundary.decode()}"}}


def test_nul_bytes_control_characters_and_long_fields_are_422(stack: Stack, store: ObjectStore) -> None:
    store.ensure_bucket()  # when this test runs first on a new stack
    key = stack.create_clinic("Clinic Edges")
    headers = {"X-API-Key": key}
    png = noise_png()
    bad_cursor = base64.urlsafe_b64encode(b"2026-01-01T00:00:00+00:00|\x00").decode()
    requests = [
        ("GET", "/v1/audit", {"params": {"case_id": "\x00"}}),
        ("GET", "/v1/audit", {"params": {"case_id": "c" * 37}}),
        ("GET", "/v1/cases", {"params": {"reference": "\x00"}}),
        ("GET", "/v1/cases", {"params": {"reference": "r" * 201}}),
        ("GET", "/v1/cases", {"params": {"karyotype": "46,XX\x00"}}),
        ("GET", "/v1/cases", {"params": {"status": "\x00"}}),
        ("GET", "/v1/cases", {"params": {"cursor": bad_cursor}}),
        ("GET", "/v1/cases", {"params": {"cursor": "not a cursor"}}),
        ("GET", "/v1/cases", {"params": {"until": "0.5"}}),  # not a Unix time: an RFC 3339 date-time
        ("GET", "/v1/cases", {"params": {"since": "2026-12-03"}}),
        ("GET", "/v1/cases", {"params": {"abnormal": "yes"}}),  # true or false
        ("GET", "/v1/cases/%00", {}),
        ("GET", "/v1/cases/" + "a" * 37, {}),
        ("GET", "/v1/cases/%00/karyogram", {}),
        ("GET", "/v1/cases/%00/report", {}),
        ("DELETE", "/v1/cases/%00", {}),
        ("POST", "/v1/cases", {"files": [("files", ("a.png", png, "image/png"))], "data": {"reference": "r\x00"}}),
        ("POST", "/v1/cases", {"files": [("files", ("a.png", png, "image/png"))], "data": {"reference": "r" * 201}}),
        ("POST", "/v1/cases", raw_upload(b"a\x00b.png", png)),  # httpx would send a NUL as %00
        ("POST", "/v1/cases", raw_upload(b"a\tb.png", png)),
        ("POST", "/v1/icis/classify", raw_upload(b"a\x00b.png", png)),
        ("POST", "/v1/cases", {"files": [("files", ("n" * 297 + ".png", png, "image/png"))]}),
        ("POST", "/v1/icis/classify", {"files": [("files", ("n" * 297 + ".png", png, "image/png"))]}),
    ]
    for method, path, arguments in requests:
        sent_headers = {**headers, **arguments.pop("headers", {})}
        response = httpx.request(method, f"{stack.api_url}{path}", headers=sent_headers, timeout=60, **arguments)
        assert response.status_code == 422, (method, path, response.status_code, response.text)
        body = assert_clean_error(response, stack)
        assert body["errors"] and body["errors"][0]["loc"][0] in ("query", "path", "body"), body
    # keys that are no keys: a NUL in a form field, a cookie (Starlette unquotes "\000") or a header
    login = httpx.post(f"{stack.api_url}/dashboard/login", data={"key": "kf_\x00"}, timeout=30)
    assert login.status_code == 401
    assert_clean_error(login, stack)
    cookie = httpx.get(f"{stack.api_url}/dashboard/data", headers={"Cookie": 'karyoflow_key="kf_\\000"'}, timeout=30)
    assert cookie.status_code == 401
    assert_clean_error(cookie, stack)
    header = httpx.get(f"{stack.api_url}/v1/cases", headers={"X-API-Key": "kf_\x7f" + "x" * 300}, timeout=30)
    assert header.status_code == 401
    assert_clean_error(header, stack)
    # nothing of it was stored; the name the column can hold, and an empty cursor, are fine
    listed = httpx.get(f"{stack.api_url}/v1/cases", params={"cursor": ""}, headers=headers, timeout=30)
    assert listed.status_code == 200 and listed.json()["items"] == []
    clinic_prefix = store.list("clinics/")
    longest = httpx.post(
        f"{stack.api_url}/v1/cases",
        files=[("files", ("n" * 296 + ".png", png, "image/png"))],
        data={"reference": "Müller-Lüdenscheidt " + "r" * 179},
        headers=headers,
        timeout=60,
    )
    assert longest.status_code == 202, longest.text
    assert len(store.list("clinics/")) == len(clinic_prefix) + 1
    with client(stack, key) as api:  # done or failed (noise): no work left for the tests after this one
        api.wait_finished([longest.json()["id"]], TIMEOUT_S)


def test_storage_down_is_a_503_that_names_no_host(stack: Stack) -> None:
    key = stack.create_clinic("Clinic Storage Down")
    headers = {"X-API-Key": key}
    stack.stop("s3")
    try:
        response = httpx.post(
            f"{stack.api_url}/v1/cases",
            files=[("files", ("a.png", noise_png(), "image/png"))],
            headers=headers,
            timeout=180,
        )
        assert response.status_code == 503, response.text
        body = assert_clean_error(response, stack)
        assert "object storage unavailable" in body["detail"] and "nothing was stored" in body["detail"]
    finally:
        stack.start_storage()
    wait_ready(stack)
    assert httpx.get(f"{stack.api_url}/v1/cases", headers=headers, timeout=30).json()["items"] == []


def _intake_processes(api_pid: int) -> list[int]:
    """The API's intake processes: its children started by multiprocessing's spawn, less the
    resource tracker."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            command = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):  # a process that ended meanwhile
            continue
        if parent == api_pid and b"spawn_main" in command and b"resource_tracker" not in command:
            found.append(int(stat.parent.name))
    return found


def test_an_intake_process_killed_loses_no_upload(stack: Stack) -> None:
    """New cases are stored by the API's intake process; one killed while idle is replaced at the
    next upload, which is stored once, as every upload before it."""
    key = stack.create_clinic("Clinic Intake")
    headers = {"X-API-Key": key}

    def upload(reference: str) -> httpx.Response:
        files = [("files", ("a.png", noise_png(), "image/png"))]
        return httpx.post(f"{stack.api_url}/v1/cases", files=files, data={"reference": reference},
                          headers=headers, timeout=180)  # fmt: skip

    assert upload("before").status_code == 202
    api_pid = stack.processes["api"].pid
    (intake,) = _intake_processes(api_pid)  # the default: one per API process
    os.kill(intake, signal.SIGKILL)
    deadline = time.time() + 30
    while intake in _intake_processes(api_pid) and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1)  # the pool sees its process gone
    after = upload("after")
    assert after.status_code == 202, after.text
    assert _intake_processes(api_pid) not in ([], [intake])
    listed = httpx.get(f"{stack.api_url}/v1/cases", headers=headers, timeout=30).json()["items"]
    assert sorted(case["reference"] for case in listed) == ["after", "before"]
    assert httpx.get(f"{stack.api_url}/health", timeout=30).status_code == 200


def test_task_runs_name_the_process_that_ran_them(stack: Stack, db: Session, labelled_dir: Path) -> None:
    key = stack.create_clinic("Clinic Workers")
    case_id = submit(stack, key, [labelled_dir / "mci" / "original_7.json"])
    wait_done(stack, key, [case_id])
    db.expire_all()
    workers = set(db.scalars(select(TaskRun.worker).where(TaskRun.case_id == case_id)).all())
    prefork = {stack.processes[name].pid: name for name in ("gpu0", "cpu")}
    threaded = {stack.processes["classify"].pid: "classify"}  # a thread pool: tasks run in the worker itself
    assert workers
    for worker in workers:
        node, pid = worker.rsplit(":", 1)
        if int(pid) in threaded:
            assert node.split("@")[0] == threaded[int(pid)], (worker, threaded)
            continue
        parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        # the prefork child that ran the task, under the worker named in the node name
        assert int(pid) not in prefork and node.split("@")[0] == prefork[parent], (worker, prefork)


def test_schemathesis_finds_no_server_error_and_no_schema_violation(stack: Stack, tmp_path: Path) -> None:
    """Every operation of the OpenAPI document, with a clinic's key, for a fixed time budget
    (KARYO_SCHEMATHESIS_S, 90 s): generated valid and invalid requests; no 5xx, every status,
    header, content type and body as documented."""
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    assert st is not None, "schemathesis is not installed (pip install -e '.[dev]')"
    key = stack.create_clinic("Clinic Fuzz")
    report = tmp_path / "junit.xml"
    command = [
        st, "run", f"{stack.api_url}/openapi.json",
        "--header", f"X-API-Key: {key}",
        "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
                    "response_headers_conformance,response_schema_conformance,negative_data_rejection",
        "--mode", "all", "--max-time", str(SCHEMATHESIS_BUDGET_S), "--seed", "18",
        "--request-timeout", "60", "--no-color", "--report", "junit", "--report-junit-path", str(report),
    ]  # fmt: skip
    finished = subprocess.run(command, capture_output=True, text=True, timeout=SCHEMATHESIS_BUDGET_S + 240)
    output = finished.stdout + finished.stderr
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "schemathesis.txt").write_text(output)
    assert finished.returncode == 0, output[-6000:]
    assert "passed" in output.lower(), output[-3000:]
