"""The distributed service end to end: real Redis (its own redis-server), PostgreSQL, SeaweedFS
S3, the API under uvicorn, three Celery workers and the sweeper (service.devstack.stack)."""

from __future__ import annotations

import io
import json
import signal
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis
from PIL import Image
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import Case, CaseImage, ChromosomeRow, ModelVersion, TaskRun
from infra.storage import ObjectStore
from karyoflow.data.bioimlab import read_mci
from karyoflow.pipeline import Karyotyper
from karyoflow.report import validate_report
from service.devstack.stack import Stack
from tests.helpers import assert_one_result_set, offset_port, png_of, submit, wait_done, wait_ready, wait_status

pytestmark = pytest.mark.system


def test_cases_flow_through_the_service(
    stack: Stack, db: Session, store: ObjectStore, labelled_dir: Path, karyotyper: Karyotyper
) -> None:
    key = stack.create_clinic("Clinic A")
    one = [labelled_dir / "mci" / "original_3.json"]
    two = [labelled_dir / "mci" / "original_4.json", labelled_dir / "mci" / "original_107a.json"]
    case_ids = [submit(stack, key, one, reference="P-001"), submit(stack, key, two, reference="P-002")]
    cases = wait_done(stack, key, case_ids)

    for case_id, paths in zip(case_ids, (one, two), strict=True):
        case = cases[case_id]
        report = httpx.get(f"{stack.api_url}/v1/cases/{case_id}/report", headers={"X-API-Key": key}, timeout=30)
        assert report.status_code == 200
        reports = report.json()["reports"]
        assert len(reports) == len(paths)
        for position, (path, served) in enumerate(zip(paths, reports, strict=True)):
            validate_report(served)
            local = karyotyper.analyse(read_mci(path).image, path.name)
            assert [c["label"] for c in served["chromosomes"]] == [c.label for c in local.chromosomes]
            assert served["karyotype"] == local.karyotype.iscn == case["images"][position]["karyotype"]
            png = httpx.get(
                f"{stack.api_url}/v1/cases/{case_id}/karyogram",
                params={"image": position},
                headers={"X-API-Key": key},
                timeout=30,
            )
            assert png.status_code == 200 and png.headers["content-type"] == "image/png"
            assert Image.open(io.BytesIO(png.content)).size[0] == 1400
        assert_one_result_set(db, store, case)
        stages = set(db.scalars(select(TaskRun.stage).where(TaskRun.case_id == case_id)).all())
        assert stages == {"segment", "classify", "assemble"}
    served_models = {m["sha256"] for m in reports[0]["models"].values() if isinstance(m, dict)}
    assert served_models <= set(db.scalars(select(ModelVersion.sha256)).all())

    listed = httpx.get(f"{stack.api_url}/v1/cases", params={"limit": 1}, headers={"X-API-Key": key}, timeout=30).json()
    assert len(listed["items"]) == 1 and listed["next_cursor"]
    rest = httpx.get(
        f"{stack.api_url}/v1/cases", params={"cursor": listed["next_cursor"]}, headers={"X-API-Key": key}, timeout=30
    ).json()
    assert {c["id"] for c in listed["items"] + rest["items"]} >= set(case_ids)
    by_ref = httpx.get(f"{stack.api_url}/v1/cases", params={"reference": "P-002"}, headers={"X-API-Key": key}).json()
    assert [c["id"] for c in by_ref["items"]] == [case_ids[1]]


def test_a_clinic_sees_only_its_own_cases(stack: Stack, labelled_dir: Path) -> None:
    key_a, key_b = stack.create_clinic("Clinic Iso A"), stack.create_clinic("Clinic Iso B")
    case_id = submit(stack, key_a, [labelled_dir / "mci" / "original_7.json"])
    for path in (f"/v1/cases/{case_id}", f"/v1/cases/{case_id}/karyogram", f"/v1/cases/{case_id}/report"):
        assert httpx.get(stack.api_url + path, headers={"X-API-Key": key_b}, timeout=30).status_code == 404
    listed = httpx.get(f"{stack.api_url}/v1/cases", headers={"X-API-Key": key_b}, timeout=30).json()
    assert case_id not in {c["id"] for c in listed["items"]}
    assert httpx.get(f"{stack.api_url}/v1/cases/{case_id}", timeout=30).status_code == 401
    assert httpx.get(f"{stack.api_url}/v1/cases/{case_id}", headers={"X-API-Key": "kf_wrong"}).status_code == 401
    wait_done(stack, key_a, [case_id])


def test_bad_uploads_are_refused_and_store_nothing(stack: Stack, db: Session, store: ObjectStore) -> None:
    key = stack.create_clinic("Clinic Bad")
    headers = {"X-API-Key": key}
    before = set(store.list("clinics/"))
    good = io.BytesIO()  # noise: incompressible, so cutting the file really truncates the pixels
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 300), dtype=np.uint8)).save(good, format="PNG")
    black = io.BytesIO()
    Image.fromarray(np.zeros((300, 300), np.uint8)).save(black, format="PNG")
    gif = io.BytesIO()
    Image.fromarray(np.zeros((300, 300), np.uint8)).save(gif, format="GIF")
    bomb = io.BytesIO()
    Image.new("1", (20000, 20000)).save(bomb, format="PNG")  # tiny file, 400 M pixels
    cases = [
        ([("files", ("notes.png", b"plain text", "image/png"))], 422, "not a readable"),
        ([("files", ("cell.gif", gif.getvalue(), "image/gif"))], 415, "GIF"),
        ([("files", ("bomb.png", bomb.getvalue(), "image/png"))], 413, "pixels"),
        ([("files", ("ok.png", good.getvalue(), "image/png")),
          ("files", ("cut.png", good.getvalue()[:200], "image/png"))], 422, "cut.png"),
    ]  # fmt: skip
    for files, status, reason in cases:
        response = httpx.post(f"{stack.api_url}/v1/cases", files=files, headers=headers, timeout=30)
        assert response.status_code == status, response.text
        assert reason in response.json()["detail"]
    assert httpx.get(f"{stack.api_url}/v1/cases", headers=headers).json()["items"] == []
    assert set(store.list("clinics/")) == before


def test_a_worker_killed_during_segmentation_loses_nothing(
    stack: Stack, db: Session, store: ObjectStore, labelled_dir: Path
) -> None:
    """The whole segment worker dies mid-task: its message stays held in Redis (until the
    visibility timeout, an hour); the sweeper finds no live worker holding it and puts it back,
    and the new worker runs it. What a worker holds it says itself (workers.control): the
    segment worker lists the image while it segments it, and says nothing once it is dead."""
    from celery import Celery

    probe = Celery(broker=stack.env["KARYO_REDIS_URL"])

    def held_by_segment_worker() -> list | None:
        replies = probe.control.broadcast("held_tasks", reply=True, timeout=2) or []
        return next((tasks for reply in replies for worker, tasks in reply.items() if worker.startswith("gpu0@")), None)

    key = stack.create_clinic("Clinic Kill")
    case_id = submit(stack, key, [labelled_dir / "mci" / "original_8.json"])
    wait_status(stack, key, case_id, "segmenting")
    image_id = str(db.scalar(select(CaseImage.id).where(CaseImage.case_id == case_id)))
    held = held_by_segment_worker()
    db.expire_all()
    try:
        assert held is not None, "the live segment worker did not answer"
        if db.scalar(select(Case.status).where(Case.id == case_id)) == "segmenting":  # still, after the answer
            assert image_id in [image for _task, image in held]
        stack.stop("gpu0", sig=signal.SIGKILL)  # the whole worker, its pool child included
        assert held_by_segment_worker() is None
    finally:
        if "gpu0" not in stack.processes:  # stopped: the next tests need it back
            stack.start_worker("gpu0", "segment")
    case = wait_done(stack, key, [case_id])[case_id]
    assert_one_result_set(db, store, case)
    db.expire_all()
    assert db.scalar(select(func.count()).select_from(TaskRun).where(
        TaskRun.case_id == case_id, TaskRun.stage == "assemble")) >= 1  # fmt: skip


def test_cases_survive_a_redis_restart(stack: Stack, db: Session, store: ObjectStore, labelled_dir: Path) -> None:
    """Redis goes down while the first case is segmenting and stays down longer than a
    segmentation takes, so its task finishes with Redis gone and must wait to enqueue the
    classification chord (a CI run once failed the case here: redis-py's ConnectionError is
    not the builtin one, so it was not treated as transient). The second case's queued message
    is lost with Redis's memory: the sweeper enqueues it again."""
    key = stack.create_clinic("Clinic Redis")
    case_ids = [submit(stack, key, [labelled_dir / "mci" / name]) for name in ("original_1.json", "original_2.json")]
    wait_status(stack, key, case_ids[0], "segmenting")
    stack.stop_redis()  # no persistence: every queued message and chord state is gone
    time.sleep(8)
    stack.start_redis()
    cases = wait_done(stack, key, case_ids)
    for case in cases.values():
        assert_one_result_set(db, store, case)
    # the first case waited for Redis instead of being segmented again (by a retry or the sweeper)
    db.expire_all()
    segmented = db.scalar(select(func.count()).select_from(TaskRun).where(
        TaskRun.case_id == case_ids[0], TaskRun.stage == "segment"))  # fmt: skip
    assert segmented == 1


def test_the_images_with_a_message_are_read_from_queues_and_from_what_workers_hold(stack: Stack) -> None:
    """Messages as Celery writes them (a fresh app on the stack's Redis, on queues no worker
    reads): segment_image, classify_ici and record_failure name their image first,
    assemble_image after the chord's results; a message a worker took and has not acknowledged
    is still there, one taken off its queue otherwise is not; a held message put back (as the
    sweeper does when no live worker holds it) is on its queue again, marked redelivered, and no
    longer held."""
    from celery import Celery
    from kombu import Connection

    from workers.inflight import read_in_flight, restore_held

    url = stack.env["KARYO_REDIS_URL"]
    queues = ("probe-segment", "probe-classify", "probe-assemble")
    client = redis.Redis.from_url(url)
    probe = Celery(broker=url)
    ids = [f"00000000-0000-4000-8000-00000000000{n}" for n in range(5)]
    try:
        probe.send_task("workers.tasks.segment_image", args=(ids[0],), queue=queues[0])
        probe.send_task("workers.tasks.classify_ici", args=(ids[1], 7, "iVBORw0KGgo=", 1.0, 0.5, "case", "g"),
                        queue=queues[1])  # fmt: skip
        results = [{"p": [1 / 24] * 24, "ms": 1.0}] * 46  # longer than Celery's argsrepr keeps
        probe.send_task("workers.tasks.assemble_image", args=(results, ids[2]), queue=queues[2])
        probe.send_task("workers.tasks.record_failure", args=(ids[3], "reason"), queue=queues[2])
        probe.send_task("workers.tasks.segment_image", args=(ids[4],), queue=queues[0])
        assert read_in_flight(client, queues).images >= set(ids)
        with Connection(url) as connection:
            channel = connection.default_channel
            held = channel.basic_get(queues[0], no_ack=False)  # recorded as unacknowledged
            assert json.loads(held.body)[0] == [ids[0]]
            found = read_in_flight(client, queues).images
            assert set(ids) <= found
            client.lpop(queues[0])  # the other segmentation's message, taken off and lost
            found = read_in_flight(client, queues).images
            assert ids[4] not in found and set(ids[:4]) <= found
            in_flight = read_in_flight(client, queues)
            assert [(m.tag, m.image_id) for m in in_flight.held] == [(held.delivery_tag, ids[0])]
            assert in_flight.held[0].task_id == held.headers["id"]
            assert ids[0] not in in_flight.queued
            restore_held(probe, [held.delivery_tag])
            in_flight = read_in_flight(client, queues)
            assert in_flight.held == () and ids[0] in in_flight.queued
            again = channel.basic_get(queues[0], no_ack=False)
            assert json.loads(again.body)[0] == [ids[0]] and again.delivery_info["redelivered"]
            channel.basic_ack(again.delivery_tag)
            assert ids[0] not in read_in_flight(client, queues).images
    finally:
        client.delete(*queues)
        client.close()


def test_a_lost_message_is_enqueued_again_and_a_waiting_one_is_not(
    stack: Stack, db: Session, store: ObjectStore, labelled_dir: Path
) -> None:
    """With the segmentation worker stopped, two cases wait in the segment queue longer than
    KARYO_LOST_AFTER_S; one's message is taken off the queue (as a message in transit when
    Redis stops is lost). The sweeper enqueues that one again within about KARYO_LOST_AFTER_S,
    long before KARYO_STUCK_AFTER_S, and leaves the one still waiting alone."""
    key = stack.create_clinic("Clinic Lost")
    lost_after_s = stack.config.lost_after_s
    assert stack.config.stuck_after_s > 10 * lost_after_s
    client = redis.Redis.from_url(stack.env["KARYO_REDIS_URL"])
    stack.stop("gpu0")  # a warm shutdown: what it held goes back on its queue
    try:
        waiting, lost = (submit(stack, key, [labelled_dir / "mci" / f"original_{n}.json"]) for n in (3, 4))
        db.expire_all()
        lost_image = db.scalar(select(CaseImage.id).where(CaseImage.case_id == lost))
        messages = client.lrange("segment", 0, -1)
        taken = [raw for raw in messages if lost_image in json.dumps(json.loads(raw)["headers"])]
        assert len(taken) == 1, "the lost case's message was in the queue"
        assert client.lrem("segment", 1, taken[0]) == 1
        deadline = time.monotonic() + lost_after_s + 30
        while time.monotonic() < deadline:
            db.expire_all()
            if db.get(Case, lost).enqueue_count:
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"the lost message was not enqueued again within {lost_after_s + 30} s")
        time.sleep(lost_after_s)  # the waiting case, queued longer than that, stays as it is
        db.expire_all()
        assert db.get(Case, waiting).enqueue_count == 0
        assert db.get(Case, lost).enqueue_count == 1
    finally:
        client.close()
        stack.start_worker("gpu0", "segment")
    cases = wait_done(stack, key, [waiting, lost])
    for case in cases.values():
        assert_one_result_set(db, store, case)
    db.expire_all()
    assert (db.get(Case, waiting).enqueue_count, db.get(Case, lost).enqueue_count) == (0, 1)


def test_a_publish_waits_for_redis_or_gives_up_in_time(stack: Stack) -> None:
    from workers.tasks import _when_broker_is_up

    # no retries inside the client: the helper's own waiting is what is measured
    client = redis.Redis.from_url(stack.env["KARYO_REDIS_URL"], socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    stack.stop_redis()
    restart = threading.Timer(3, stack.start_redis)
    try:
        restart.start()
        started = time.monotonic()
        _when_broker_is_up(lambda: client.set("karyoflow-test-key", "sent"), wait_s=60)
        assert time.monotonic() - started >= 2.5
        assert client.get("karyoflow-test-key") == b"sent"
        restart.join()
        stack.stop_redis()
        started = time.monotonic()
        with pytest.raises(redis.exceptions.ConnectionError):
            _when_broker_is_up(client.ping, wait_s=2)
        assert time.monotonic() - started < 10
    finally:
        restart.join()
        if "redis" not in stack.processes:  # stopped by this test (stop forgets the process)
            stack.start_redis()
    assert client.ping()


def test_readiness_follows_the_dependencies(stack: Stack) -> None:
    ready = httpx.get(f"{stack.api_url}/health/ready", timeout=30)
    assert ready.status_code == 200, ready.text
    assert ready.json() == {"status": "ok", "checks": {"database": "ok", "redis": "ok", "object_storage": "ok"}}
    stack.stop_redis()
    try:
        down = httpx.get(f"{stack.api_url}/health/ready", timeout=30)
        assert down.status_code == 503
        assert down.json()["checks"] == {"database": "ok", "redis": "unavailable", "object_storage": "ok"}
        assert httpx.get(f"{stack.api_url}/health", timeout=30).status_code == 200  # liveness: still up
    finally:
        stack.start_redis()
    assert httpx.get(f"{stack.api_url}/health/ready", timeout=30).status_code == 200
    # a wrong S3 secret (an IT misconfiguration) is named as such, not as "ok"
    from api.readiness import check_dependencies
    from infra.settings import Settings

    env = stack.env
    wrong = Settings(
        database_url=env["KARYO_DATABASE_URL"],
        redis_url=env["KARYO_REDIS_URL"],
        s3_endpoint=env["KARYO_S3_ENDPOINT"],
        s3_access_key=env["KARYO_S3_ACCESS_KEY"],
        s3_secret_key="not-the-secret",
    )
    checks = check_dependencies(wrong)
    assert (checks["database"], checks["redis"]) == ("ok", "ok")
    # SeaweedFS says AccessDenied, MinIO SignatureDoesNotMatch
    assert checks["object_storage"].startswith("S3Error: ") and "code: AccessDenied" in checks["object_storage"]


def test_a_broker_outage_leaves_the_case_to_the_sweeper_other_errors_fail_it(
    stack: Stack, db: Session, labelled_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The failure handler of a task, run here against the stack's database: Redis unreachable
    (a retry could not even be enqueued) leaves the case in its stage for the sweeper; any other
    error fails it with the stage and the reason. Redis is down during the upload, so no worker
    touches the case meanwhile."""
    from db import session as db_session
    from infra.settings import get_settings
    from workers.tasks import segment_image  # imported (torch and all) before the clock starts

    key = stack.create_clinic("Clinic Broker")
    stack.stop_redis()
    try:
        case_id = submit(stack, key, [labelled_dir / "mci" / "original_3.json"])
    finally:
        stack.start_redis()
    db.expire_all()
    image_id = db.scalar(select(CaseImage.id).where(CaseImage.case_id == case_id))
    monkeypatch.setenv("KARYO_DATABASE_URL", stack.env["KARYO_DATABASE_URL"])
    for cache in (get_settings, db_session.get_engine, db_session.get_sessionmaker):
        cache.cache_clear()
    try:
        segment_image.on_failure(redis.exceptions.ConnectionError("Redis gone"), "task-1", (image_id,), {}, None)
        db.expire_all()
        assert db.get(Case, case_id).status == "received"
        segment_image.on_failure(ValueError("not an image"), "task-2", (image_id,), {}, None)
        db.expire_all()
        case = db.get(Case, case_id)
        assert (case.status, case.error) == ("failed", "segment_image: ValueError: not an image")
    finally:
        db_session.get_engine().dispose()
        monkeypatch.undo()
        for cache in (get_settings, db_session.get_engine, db_session.get_sessionmaker):
            cache.cache_clear()


def test_a_task_that_fails_for_good_marks_its_case_failed(
    stack: Stack, db: Session, store: ObjectStore, labelled_dir: Path
) -> None:
    """An original that rots in storage after its upload fails segmentation for good (not a
    transient error, so no retries): the case is failed with the stage and the reason, and the
    sweeper leaves it alone. Redis is down during the upload so that no worker reads the
    original before it is overwritten; the sweeper enqueues the case once Redis is back."""
    key = stack.create_clinic("Clinic Rot")
    stack.stop_redis()
    try:
        case_id = submit(stack, key, [labelled_dir / "mci" / "original_3.json"])
        original = db.scalar(select(CaseImage).where(CaseImage.case_id == case_id))
        store.put(original.object_key, b"these bytes are no longer a PNG", "image/png")
    finally:
        stack.start_redis()
    wait_status(stack, key, case_id, "failed", timeout=180)
    case = httpx.get(f"{stack.api_url}/v1/cases/{case_id}", headers={"X-API-Key": key}, timeout=30).json()
    assert case["error"].startswith("segment_image: UnidentifiedImageError"), case["error"]
    assert [image["status"] for image in case["images"]] == ["failed"]
    time.sleep(5)  # a few sweeps later it is still failed, not re-enqueued
    again = httpx.get(f"{stack.api_url}/v1/cases/{case_id}", headers={"X-API-Key": key}, timeout=30).json()
    assert again["status"] == "failed" and again["error"] == case["error"]


def test_a_finished_case_is_erased_and_storage_down_only_delays_it(
    stack: Stack, db: Session, store: ObjectStore, labelled_dir: Path
) -> None:
    key = stack.create_clinic("Clinic Erase")
    headers = {"X-API-Key": key}
    case_id = submit(stack, key, [labelled_dir / "mci" / "original_3.json"])
    wait_done(stack, key, [case_id])
    db.expire_all()
    image_ids = db.scalars(select(CaseImage.id).where(CaseImage.case_id == case_id)).all()
    prefix = f"clinics/{db.get(Case, case_id).clinic_id}/cases/{case_id}/"
    assert len(store.list(prefix)) > 40  # original, ICIs, masks, cell.json, karyogram, report
    url = f"{stack.api_url}/v1/cases/{case_id}"
    other = stack.create_clinic("Clinic Not Theirs")
    assert httpx.delete(url, headers={"X-API-Key": other}, timeout=60).status_code == 404

    stack.stop("s3")  # storage down: the deletion cannot finish, and says so
    try:
        cut = httpx.delete(url, headers=headers, timeout=120)
        assert cut.status_code == 503 and "repeat the request" in cut.json()["detail"]
        shown = httpx.get(url, headers=headers, timeout=30).json()
        assert shown["status"] == "deleting" and shown["images"]
        assert httpx.get(f"{url}/karyogram", headers=headers, timeout=30).status_code == 409
    finally:
        stack.start_storage()
    wait_ready(stack)
    assert store.list(prefix), "the case's objects are still there"
    assert httpx.delete(url, headers=headers, timeout=120).status_code == 204
    assert store.list(prefix) == []
    db.expire_all()
    assert db.get(Case, case_id) is None
    assert db.scalar(select(func.count()).select_from(CaseImage).where(CaseImage.case_id == case_id)) == 0
    assert db.scalar(select(func.count()).select_from(TaskRun).where(TaskRun.case_id == case_id)) == 0
    assert db.scalar(select(func.count()).select_from(ChromosomeRow).where(ChromosomeRow.image_id.in_(image_ids))) == 0
    assert httpx.get(url, headers=headers, timeout=30).status_code == 404
    assert httpx.delete(url, headers=headers, timeout=30).status_code == 404
    # the audit trail outlives the case: created, then erased (once: the cut-short try left none)
    audit = httpx.get(f"{stack.api_url}/v1/audit", params={"case_id": case_id}, headers=headers, timeout=30).json()
    assert [e["action"] for e in audit] == ["case.deleted", "case.created"]
    assert audit[0]["detail"] == {"images": 1} and audit[0]["api_key_id"] is not None
    assert audit[0]["api_key_id"] == audit[1]["api_key_id"]
    foreign = httpx.get(f"{stack.api_url}/v1/audit", params={"case_id": case_id}, headers={"X-API-Key": other})
    assert foreign.json() == []  # another clinic sees none of it


def test_an_unfinished_case_cannot_be_deleted(stack: Stack, store: ObjectStore, labelled_dir: Path) -> None:
    from service.cli import main as karyo

    key = stack.create_clinic("Clinic Early Erase")
    stack.stop_redis()  # the case stays `received` (not enqueued) while we try
    try:
        case_id = submit(stack, key, [labelled_dir / "mci" / "original_4.json"])
        refused = httpx.delete(f"{stack.api_url}/v1/cases/{case_id}", headers={"X-API-Key": key}, timeout=60)
        assert refused.status_code == 409 and "received" in refused.json()["detail"]
    finally:
        stack.start_redis()
    case = wait_done(stack, key, [case_id])[case_id]  # the sweeper enqueues it; it is kept
    assert case["images"][0]["chromosome_count"] > 30
    assert karyo(["cases", "delete", case_id, "--api", stack.api_url, "--key", key]) == 0
    assert httpx.get(f"{stack.api_url}/v1/cases/{case_id}", headers={"X-API-Key": key}).status_code == 404


def test_the_migrations_build_the_models_schema_on_postgresql(stack: Stack, db: Session) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from db.models import Base

    assert db.get_bind().dialect.name == "postgresql"
    assert compare_metadata(MigrationContext.configure(db.connection()), Base.metadata) == []
    db.rollback()


def test_client_commands(stack: Stack, labelled_dir: Path, tmp_path: Path, capsys) -> None:
    from service.cli import main as karyo

    key = stack.create_clinic("Clinic CLI")
    client = ["--api", stack.api_url, "--key", key]
    image = tmp_path / "cell 107b.png"
    image.write_bytes(png_of(labelled_dir / "mci" / "original_107b.json"))
    assert karyo(["submit", str(image), "--reference", "S-9", "--wait", "--json", *client]) == 0
    case = json.loads(capsys.readouterr().out)
    assert case["status"] == "done" and case["images"][0]["chromosome_count"] > 30
    assert karyo(["cases", "list", "--reference", "S-9", "--json", *client]) == 0
    assert [c["id"] for c in json.loads(capsys.readouterr().out)["items"]] == [case["id"]]
    assert karyo(["cases", "show", case["id"], *client]) == 0
    assert case["karyotype"] in capsys.readouterr().out
    out = tmp_path / "k.png"
    assert karyo(["cases", "karyogram", case["id"], "--out", str(out), *client]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert karyo(["cases", "show", "no-such-case", *client]) == 2
    assert "HTTP 404" in capsys.readouterr().err
    assert karyo(["submit", str(tmp_path / "missing.png"), *client]) == 2


def test_stack_command_starts_and_stops_everything(tmp_path: Path, monkeypatch, capsys) -> None:
    from service.cli import main as karyo

    monkeypatch.setenv("KARYO_STACK_DIR", str(tmp_path / "elsewhere"))  # --dir wins over it
    directory = ["--dir", str(tmp_path / "stack")]
    # beside the session stack's ports; S3 50 above its (SeaweedFS's other ports follow S3's)
    api_port = offset_port(8721)
    ports = ["--api-port", str(api_port), "--redis-port", str(offset_port(6392)), "--s3-port", str(offset_port(18383))]
    try:
        assert karyo(["stack", "up", "--sqlite", *directory, *ports, "--flower-port", str(offset_port(5577))]) == 0
        printed = capsys.readouterr().out
        assert f"http://127.0.0.1:{api_port}" in printed and "kf_" in printed
        state = tmp_path / "stack" / "state.json"
        assert state.stat().st_mode & 0o777 == 0o600 and "dev_api_key" in state.read_text()
        assert karyo(["stack", "status"]) == 1  # nothing runs from $KARYO_STACK_DIR
        capsys.readouterr()
        assert karyo(["stack", "status", *directory]) == 0
        status = capsys.readouterr().out
        assert "segment 0" in status and "/health 200  /health/ready 200" in status and "STOPPED" not in status
        monkeypatch.setenv("KARYO_STACK_DIR", str(tmp_path / "stack"))
        assert karyo(["cases", "list", "--json"]) == 0  # URL and key found without flags
        assert json.loads(capsys.readouterr().out)["items"] == []
    finally:
        karyo(["stack", "down", *directory])
    assert not state.exists()
    assert karyo(["stack", "status", *directory]) == 1
