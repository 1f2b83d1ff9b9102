"""Per MCI: segment -> a chord of one classification task per ICI -> assemble.

Every task is idempotent: it writes the same object keys and replaces (never appends) its rows,
so a task delivered twice (a killed worker, the sweeper) leaves exactly one result set.
"""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import redis.exceptions
from celery import Task, chord
from kombu.exceptions import OperationalError as BrokerOperationalError
from minio.error import S3Error
from PIL import Image
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session
from urllib3.exceptions import HTTPError as Urllib3Error

from db.models import Case, CaseImage, ChromosomeRow, TaskRun
from db.review import refresh_case_consensus
from db.session import session_scope
from infra.settings import get_settings
from infra.storage import ObjectStore, image_prefix
from karyoflow.classify.predictor import prediction_from_probabilities
from karyoflow.pipeline import KaryotypeResult, SegmentedCell, grey_from_bytes
from karyoflow.report import render_outputs, validate_report
from workers.app import app
from workers.runtime import get_karyotyper, get_store

# Redis (broker and result backend) unreachable. redis-py's errors do not derive from the
# builtin ConnectionError/TimeoutError, so they are named here.
BROKER_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, BrokerOperationalError)
TRANSIENT = (S3Error, OperationalError, Urllib3Error, ConnectionError, TimeoutError, *BROKER_DOWN)
log = logging.getLogger("karyoflow.worker")


class CaseTask(Task):
    """Retries transient storage/database/broker errors with backoff; a task that fails for good
    marks its case failed with the reason, unless the broker was down: then the retry itself
    could not be enqueued, and the case is left in its stage for the sweeper, which re-enqueues
    it from the database once Redis is back."""

    autoretry_for = TRANSIENT
    retry_backoff = 2
    retry_backoff_max = 60
    retry_jitter = True
    max_retries = get_settings().max_task_retries

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        # every task takes its image's id as its first string argument
        image_id = kwargs.get("image_id") or next((a for a in args if isinstance(a, str)), None)
        if image_id is None:
            return
        if isinstance(exc, BROKER_DOWN):
            log.warning("%s for image %s: Redis unreachable (%s); left for the sweeper", self.name, image_id, exc)
            return
        reason = f"{self.name.rsplit('.', 1)[-1]}: {type(exc).__name__}: {exc}"[:2000]
        with session_scope() as session:
            image = session.get(CaseImage, image_id)
            if image is None:
                return
            image.status = "failed"
            # the case row locked: DELETE switches a failed case to "deleting" under the same lock
            case = session.get(Case, image.case_id, with_for_update=True)
            if case is not None and case.status not in ("done", "deleting"):
                case.status, case.error, case.finished_at = "failed", reason, datetime.now(UTC)


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def worker_name(task: Task) -> str:
    """Who ran the task: the worker's node name (`gpu0@host`) and the id of the process that ran
    it, read as it runs (a prefork worker's child, not the parent that imported this module)."""
    return f"{task.request.hostname or socket.gethostname()}:{os.getpid()}"


def _record(case_id: str, image_id: str | None, stage: str, task: Task, started: float, error: str | None = None):
    now = datetime.now(UTC)
    try:
        with session_scope() as session:
            session.add(
                TaskRun(
                    case_id=case_id,
                    image_id=image_id,
                    stage=stage,
                    task_id=task.request.id or "",
                    worker=worker_name(task),
                    status="ok" if error is None else "failed",
                    started_at=datetime.fromtimestamp(started, UTC),
                    finished_at=now,
                    duration_ms=round((time.time() - started) * 1000, 1),
                    retries=task.request.retries or 0,
                    error=error,
                )
            )
    except IntegrityError:  # the case was deleted while the task ran: nothing to record it for
        log.info("%s of image %s not recorded: its case no longer exists", stage, image_id)


def _when_broker_is_up(enqueue: Callable[[], object], wait_s: float | None = None) -> None:
    """Run `enqueue` (a publish to Redis), retrying while Redis is unreachable for up to `wait_s`
    seconds. Called once a task's work is stored, so that a Redis restart costs a wait, not the
    work again (a Celery retry re-runs the whole task, and cannot even be enqueued while Redis
    is down). Messages published before a failure are lost with Redis's memory, or, when Redis
    kept them, are harmless duplicates: the tasks are idempotent."""
    deadline = time.monotonic() + (get_settings().broker_wait_s if wait_s is None else wait_s)
    delay = 0.5
    while True:
        try:
            enqueue()
            return
        except BROKER_DOWN as error:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("Redis unreachable (%s); enqueueing again in %.1f s", error, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


@dataclass(frozen=True)
class ImageRef:
    """What a task needs to know of its image, read once in the stage transition."""

    case_id: str
    object_key: str  # the uploaded original
    filename: str
    prefix: str  # where the image's derived objects live
    stain: str = "auto"  # the case's stain as given: q, g or auto


def _erased(image: CaseImage | None) -> bool:
    """The image's case is being deleted, or is gone."""
    return image is None or image.case.status == "deleting"


def _case_erased(image_id: str) -> bool:
    with session_scope() as session:
        return _erased(session.get(CaseImage, image_id))


def _remove_erased(store: ObjectStore, prefix: str) -> None:
    """Remove what a task wrote for an image whose case was deleted meanwhile. Not retried: a
    retry would find the case gone and could no longer tell where its objects were, so a
    failure is logged with the prefix for an operator."""
    try:
        store.delete_prefix(f"{prefix}/")
    except Exception as error:
        log.error("objects of a deleted case left under %s/ (%s): remove them by hand", prefix, error)


def _set_stage(image_id: str, stage: str) -> ImageRef | None:
    """Move the image (and its case, unless it is further on) to `stage`; None when the case is
    already finished or being deleted, or gone (a late duplicate delivery has nothing to do)."""
    with session_scope() as session:
        image = session.get(CaseImage, image_id)
        if image is None:
            log.warning("image %s no longer exists (its case was deleted): nothing to do", image_id)
            return None
        case = image.case
        if case.status in ("done", "failed", "deleting") or image.status == "done":
            return None
        image.status = stage
        order = ("received", "segmenting", "classifying", "assembling")
        if case.status in order and order.index(stage) >= order.index(case.status):
            if case.status != stage:
                case.stage_started_at = datetime.now(UTC)
            case.status = stage
        prefix = image_prefix(case.clinic_id, case.id, image.position)
        return ImageRef(case.id, image.object_key, image.filename, prefix, case.stain)


@app.task(base=CaseTask, bind=True, name="workers.tasks.segment_image")
def segment_image(self: Task, image_id: str) -> int:
    """Segment one MCI; store its ICIs (straightened) and masks; launch the classification chord."""
    started = time.time()
    ref = _set_stage(image_id, "segmenting")
    if ref is None:
        return 0
    store, karyotyper = get_store(), get_karyotyper()
    detect_started = time.perf_counter()
    working, stain = karyotyper.working_image(grey_from_bytes(store.get(ref.object_key)), ref.stain)
    detections = karyotyper.detect(working, stain)
    straighten_started = time.perf_counter()
    cell = karyotyper.cut_and_straighten(working, detections, stain)
    timings = {
        "segment": round((straighten_started - detect_started) * 1000, 1),
        "straighten": round((time.perf_counter() - straighten_started) * 1000, 1),
    }
    prefix = ref.prefix
    for n, (ici, mask) in enumerate(zip(cell.straightened, cell.masks, strict=True), start=1):
        store.put(f"{prefix}/icis/{n}.png", _png(ici), "image/png")
        store.put(f"{prefix}/masks/{n}.png", _png(mask.astype(np.uint8) * 255), "image/png")
    summary = {
        "width": cell.width,
        "height": cell.height,
        "detection_scores": cell.detection_scores.tolist(),
        "boxes": [list(box) for box in cell.boxes],
        "angles": cell.angles.tolist(),
        "scale": cell.scale,
        "level": cell.level,
        "stain": stain,
        "timings_ms": timings,
    }
    store.put(f"{prefix}/cell.json", json.dumps(summary).encode(), "application/json")
    if _set_stage(image_id, "classifying") is None:
        if _case_erased(image_id):  # deleted while this task wrote: leave none of it behind
            _remove_erased(store, prefix)
        return 0
    _record(ref.case_id, image_id, "segment", self, started)
    count = len(cell.straightened)
    if count == 0:
        _when_broker_is_up(lambda: assemble_image.apply_async(args=([], image_id)))
    else:
        # fresh signatures on every try: a launched chord freezes its signatures' ids in place
        _when_broker_is_up(
            lambda: chord(
                classify_ici.s(image_id, n, cell.scale, cell.level, ref.case_id, prefix, stain)
                for n in range(1, count + 1)
            )(assemble_image.s(image_id))
        )
    return count


@app.task(base=CaseTask, bind=True, name="workers.tasks.classify_ici")
def classify_ici(
    self: Task, image_id: str, number: int, scale: float, level: float, case_id: str, prefix: str, stain: str = "q"
) -> dict:
    """ChrNet4 on one stored ICI with its cell's normalisation: {"p": 24 probabilities, "ms"}.
    The segment task passes the case and the object prefix, so the 46 tasks of an MCI do not each
    ask the database (`image_id` stays the first argument: `on_failure` looks for it there).

    One ICI per task keeps tasks small and retries cheap; a GPU worker keeps its device busy by
    running several of them concurrently (a prefork pool of 2-4 processes per GPU), each a batch
    of one. Batching across tasks would need a custom consumer; for a forward pass this small the
    queue, not the GPU, is the limit."""
    started = time.time()
    karyotyper = get_karyotyper()
    try:
        ici = grey_from_bytes(get_store().get(f"{prefix}/icis/{number}.png"))
    except S3Error as error:
        # the case erased under this task (a late task of a failed case): not an outage to
        # retry; assemble skips the erased case
        if error.code == "NoSuchKey" and _case_erased(image_id):
            return {"p": [], "ms": 0.0}
        raise
    classify_started = time.perf_counter()
    canvas = karyotyper.canvas(ici, scale, level, stain)[None]
    prediction = karyotyper.classifier_for(stain).predict_canvases(canvas, np.zeros(1))[0]
    milliseconds = (time.perf_counter() - classify_started) * 1000
    _record(case_id, image_id, "classify", self, started)
    return {"p": [float(p) for p in prediction.probabilities], "ms": round(milliseconds, 2)}


def _save_result(
    session: Session, image: CaseImage, result: KaryotypeResult, prefix: str, report_key: str, karyogram_key: str
) -> None:
    """The image's chromosome rows (replaced, not appended) and results; the case done with its
    consensus karyotype once every image is."""
    image_id, case_id = image.id, image.case_id
    session.execute(delete(ChromosomeRow).where(ChromosomeRow.image_id == image_id))
    for chromosome in result.chromosomes:
        session.add(
            ChromosomeRow(
                image_id=image_id,
                number=chromosome.id,
                label=chromosome.label,
                class_index=chromosome.class_index,
                score=chromosome.score,
                detection_score=chromosome.detection_score,
                bbox=list(chromosome.bbox),
                ici_key=f"{prefix}/icis/{chromosome.candidate + 1}.png",
                mask_key=f"{prefix}/masks/{chromosome.candidate + 1}.png",
            )
        )
    image.status = "done"
    image.stain = result.stain
    image.chromosome_count = len(result.chromosomes)
    image.karyotype = result.karyotype.iscn
    image.abnormal = result.karyotype.abnormal
    image.report_key, image.karyogram_key = report_key, karyogram_key
    image.timings_ms = result.timings_ms
    session.flush()
    case = session.get(Case, case_id)
    images = session.scalars(select(CaseImage).where(CaseImage.case_id == case_id)).all()
    if all(i.status == "done" for i in images) and case.status != "done":
        refresh_case_consensus(case, images)  # the consensus of the images (karyoflow.consensus)
        case.status, case.error, case.finished_at = "done", None, datetime.now(UTC)


@app.task(base=CaseTask, bind=True, name="workers.tasks.assemble_image")
def assemble_image(self: Task, classified: list[dict], image_id: str) -> str:
    """Karyotype assignment, karyogram and report for one MCI; rows replaced, not appended."""
    started = time.time()
    ref = _set_stage(image_id, "assembling")
    if ref is None:
        return "skipped"
    case_id, prefix = ref.case_id, ref.prefix
    store, karyotyper = get_store(), get_karyotyper()
    summary = json.loads(store.get(f"{prefix}/cell.json"))
    count = len(summary["detection_scores"])
    if len(classified) != count:
        raise RuntimeError(f"{len(classified)} classifications for {count} ICIs")
    height, width = summary["height"], summary["width"]
    masks = np.zeros((count, height, width), bool)
    straightened = []
    for n in range(1, count + 1):
        masks[n - 1] = grey_from_bytes(store.get(f"{prefix}/masks/{n}.png")) > 127
        straightened.append(grey_from_bytes(store.get(f"{prefix}/icis/{n}.png")))
    cell = SegmentedCell(
        width=width,
        height=height,
        detection_scores=np.asarray(summary["detection_scores"]),
        masks=masks,
        boxes=[tuple(box) for box in summary["boxes"]],
        straightened=straightened,
        angles=np.asarray(summary["angles"], dtype=np.float32),
        scale=summary["scale"],
        level=summary["level"],
        stain=summary.get("stain", "q"),  # cells stored before stains were recorded are Q-band
    )
    predictions = [
        prediction_from_probabilities(np.asarray(c["p"]), angle)
        for c, angle in zip(classified, summary["angles"], strict=True)
    ]
    # classification time: the sum over the ICI tasks (they may have run in parallel)
    timings = {**summary["timings_ms"], "classify": round(sum(c["ms"] for c in classified), 1)}
    assemble_started = time.perf_counter()
    result = karyotyper.assemble(ref.filename, cell, predictions, timings)
    result.timings_ms["assemble"] = round((time.perf_counter() - assemble_started) * 1000, 1)
    report, png = render_outputs(result)
    validate_report(report)
    report_key, karyogram_key = f"{prefix}/report.json", f"{prefix}/karyogram.png"
    store.put(karyogram_key, png, "image/png")
    store.put(report_key, (json.dumps(report, indent=1) + "\n").encode(), "application/json")
    with session_scope() as session:
        # the row lock serialises two deliveries of this task; the second finds the image done
        image = session.get(CaseImage, image_id, with_for_update=True)
        erased = _erased(image)  # deleted while this task wrote
        if not erased:
            if image.status == "done":
                return "skipped"
            _save_result(session, image, result, prefix, report_key, karyogram_key)
    if erased:
        _remove_erased(store, prefix)  # outside the row lock
        return "skipped"
    _record(case_id, image_id, "assemble", self, started)
    return result.karyotype.iscn
