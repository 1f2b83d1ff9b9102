"""Per MCI: segment -> a chord of one classification task per ICI -> assemble.

Every task is idempotent: it writes the same object keys and replaces (never appends) its rows,
so a task delivered twice (a killed worker, the sweeper) leaves exactly one result set. Status
changes go through db.lifecycle, object keys and the stored cell through infra.case_objects.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from functools import lru_cache

import numpy as np
import redis.exceptions
from celery import Task, chord
from kombu.exceptions import OperationalError as BrokerOperationalError
from minio.error import S3Error
from sqlalchemy.exc import OperationalError
from urllib3.exceptions import HTTPError as Urllib3Error

from db.lifecycle import (
    Finished,
    TaskRunRecord,
    case_erased,
    enter_stage,
    fail_image,
    finish_image,
    record_runs,
)
from db.session import session_scope
from db.status import Stage
from infra.case_objects import JSON, PNG, ImageKeys, load_cell, store_cell
from infra.settings import get_settings
from infra.storage import ObjectStore
from karyoflow.classify.predictor import prediction_from_probabilities
from karyoflow.pipeline import grey_from_bytes
from karyoflow.report import render_outputs, validate_report
from workers.app import SEGMENT_IMAGE, app
from workers.batching import ClassifyBatcher
from workers.inflight import image_of_args
from workers.retry import RetryPolicy
from workers.runtime import get_karyotyper, get_store

# Redis (broker and result backend) unreachable. redis-py's errors do not derive from the
# builtin ConnectionError/TimeoutError, so they are named here.
BROKER_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, BrokerOperationalError)
TRANSIENT = (S3Error, OperationalError, Urllib3Error, ConnectionError, TimeoutError, *BROKER_DOWN)
# the time of a task's first try, carried by its retries' messages: the retry deadline counts from it
FIRST_TRY_HEADER = "karyo_first_try"
DELIVERIES_TTL_S = 7 * 24 * 3600
log = logging.getLogger("karyoflow.worker")


class PoisonMessage(Exception):
    """A message whose worker process died under it more often than KARYO_MAX_REDELIVERIES."""


@lru_cache
def _redis() -> redis.Redis:
    return redis.Redis.from_url(get_settings().redis_url, socket_timeout=5, socket_connect_timeout=2)


def count_delivery(task_id: str, retries: int) -> int | None:
    """How many times this try of the task (its id and retry number: a retry is a new message,
    not a redelivery) has been delivered, this one included; None when Redis cannot say."""
    key = f"karyoflow:deliveries:{task_id}:{retries}"
    try:
        with _redis().pipeline() as pipe:
            count, _ = pipe.incr(key).expire(key, DELIVERIES_TTL_S).execute()
        return int(count)
    except redis.exceptions.RedisError as error:
        log.warning("delivery of %s not counted: %s", task_id, error)
        return None


class CaseTask(Task):
    """Retries transient storage/database/broker errors with capped exponential backoff until
    the deadline of workers.retry; a task that fails for good marks its case failed with the
    reason, through the database, or, while the database is unreachable, through a
    `record_failure` task that waits for it. A message delivered more than
    KARYO_MAX_REDELIVERIES times again (its worker process died under it each time) fails its
    case instead of running. Left for the sweeper: a failure while Redis is unreachable too
    (nothing can be enqueued), and a task that ran out of time with Redis unreachable."""

    max_retries = None  # bounded by the deadline (workers.retry), not by a count

    def __call__(self, *args, **kwargs):
        request = self.request
        if request.called_directly or not request.id:
            return super().__call__(*args, **kwargs)
        started = time.time()
        deliveries = count_delivery(request.id, request.retries or 0)
        allowed = 1 + get_settings().max_redeliveries
        if deliveries is not None and deliveries > allowed:
            raise PoisonMessage(
                f"delivered {deliveries} times: its worker process died under it each of the {deliveries - 1} "
                f"times before (out of memory, a crash?); not run again"
            )
        try:
            return self.run(*args, **kwargs)
        except TRANSIENT as error:
            first_try = float(getattr(request, FIRST_TRY_HEADER, None) or started)
            wait = RetryPolicy.from_settings().next_delay(request.retries or 0, first_try)
            if wait is None:
                raise  # past the deadline: a failure for good (on_failure)
            log.warning("%s[%s]: %s: %s; retry %d in %.1f s", self.name, request.id, type(error).__name__,
                        error, (request.retries or 0) + 1, wait)  # fmt: skip
            headers = {FIRST_TRY_HEADER: first_try}
            raise self.retry(exc=error, countdown=wait, max_retries=None, headers=headers) from error

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        # every task takes its image's id as its first string argument
        image_id = kwargs.get("image_id") or image_of_args(args)
        if image_id is None:
            return
        if isinstance(exc, BROKER_DOWN):
            log.warning("%s for image %s: Redis unreachable (%s); left for the sweeper", self.name, image_id, exc)
            return
        reason = f"{self.name.rsplit('.', 1)[-1]}: {type(exc).__name__}: {exc}"[:2000]
        fail_or_defer(image_id, reason)


def fail_or_defer(image_id: str, reason: str) -> None:
    """The image and its case failed with `reason`; while the database is unreachable, a
    `record_failure` task does it later (retried like every task, until the deadline)."""
    try:
        fail_image(image_id, reason)
        return
    except OperationalError as error:
        log.warning("failure of image %s not recorded yet (%s): deferred to record_failure", image_id, error)
    try:
        record_failure.apply_async((image_id, reason), headers={FIRST_TRY_HEADER: time.time()})
    except Exception as error:  # Redis unreachable as well
        log.error("failure of image %s not recorded (%s); left for the sweeper: %s", image_id, error, reason)


def worker_name(task: Task) -> str:
    """Who ran the task: the worker's node name (`gpu0@host`) and the id of the process that ran
    it, read as it runs (a prefork worker's child, not the parent that imported this module)."""
    return f"{task.request.hostname or socket.gethostname()}:{os.getpid()}"


def _run_of(task: Task, case_id: str, image_id: str, stage: Stage, started: float) -> TaskRunRecord:
    return TaskRunRecord(case_id, image_id, stage, task.request.id or "", worker_name(task), started, time.time(),
                         task.request.retries or 0)  # fmt: skip


def _record(task: Task, case_id: str, image_id: str, stage: Stage, started: float) -> None:
    record_runs([_run_of(task, case_id, image_id, stage, started)])


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


def _remove_erased(store: ObjectStore, keys: ImageKeys) -> None:
    """Remove what a task wrote for an image whose case was deleted meanwhile. Not retried: a
    retry would find the case gone and could no longer tell where its objects were, so a
    failure is logged with the prefix for an operator."""
    try:
        store.delete_prefix(keys.all)
    except Exception as error:
        log.error("objects of a deleted case left under %s (%s): remove them by hand", keys.all, error)


@app.task(base=CaseTask, bind=True, name=SEGMENT_IMAGE)
def segment_image(self: Task, image_id: str) -> int:
    """Segment one MCI; store its ICIs (straightened) and masks; launch the classification chord
    with each ICI in its own task's message (no storage round trip per ICI)."""
    started = time.time()
    ref = enter_stage(image_id, Stage.SEGMENT)
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
    icis = store_cell(store, ref.keys, cell, timings)
    if enter_stage(image_id, Stage.CLASSIFY) is None:
        if case_erased(image_id):  # deleted while this task wrote: leave none of it behind
            _remove_erased(store, ref.keys)
        return 0
    _record(self, ref.case_id, image_id, Stage.SEGMENT, started)
    if not icis:
        _when_broker_is_up(lambda: assemble_image.apply_async(args=([], image_id)))
    else:
        encoded = [base64.b64encode(data).decode() for data in icis]
        # fresh signatures on every try: a launched chord freezes its signatures' ids in place
        _when_broker_is_up(
            lambda: chord(
                classify_ici.s(image_id, n, ici, cell.scale, cell.level, ref.case_id, stain).set(
                    # what Flower and the task events show: the ICI by its size, not its bytes
                    argsrepr=f"({image_id!r}, {n}, '<ICI PNG, {len(ici)} base64 characters>', ...)"
                )
                for n, ici in enumerate(encoded, start=1)
            )(assemble_image.s(image_id))
        )
    return len(icis)


_batcher_lock = threading.Lock()


@lru_cache
def _unlocked_batcher() -> ClassifyBatcher:
    karyotyper = get_karyotyper()

    def forward(stain: str, canvases: np.ndarray) -> np.ndarray:
        predictions = karyotyper.classifier_for(stain).predict_canvases(canvases, np.zeros(len(canvases)))  # type: ignore[arg-type]
        return np.stack([p.probabilities for p in predictions])

    return ClassifyBatcher(forward, max_batch=get_settings().classify_batch)


def classify_batcher() -> ClassifyBatcher:
    """The process's batcher (the pool's threads ask for it at once: made once, under a lock)."""
    with _batcher_lock:
        return _unlocked_batcher()


@app.task(base=CaseTask, bind=True, name="workers.tasks.classify_ici")
def classify_ici(
    self: Task, image_id: str, number: int, ici_png: str, scale: float, level: float, case_id: str, stain: str = "q"
) -> dict:
    """ChrNet4 on one ICI (`ici_png`: its PNG, base64) with its cell's normalisation:
    {"p": 24 probabilities, "ms": its share of the batch's forward pass}. The forward pass is
    shared with whatever other ICIs this worker holds at that moment (workers.batching); the
    task is still acknowledged, retried and recorded on its own. `image_id` stays the first
    argument: `on_failure` looks for it there; `number` names the ICI in Flower."""
    started = time.time()
    # this thread's CPU time, not its wall time: the pool's threads prepare their ICIs side by
    # side, and the sum of their wall times would count each core many times over
    prepare_started = time.thread_time()
    ici = grey_from_bytes(base64.b64decode(ici_png))
    canvas = get_karyotyper().canvas(ici, scale, level, stain)  # type: ignore[arg-type]
    prepare_ms = (time.thread_time() - prepare_started) * 1000
    result = classify_batcher().classify(canvas, stain, _run_of(self, case_id, image_id, Stage.CLASSIFY, started))
    return {"p": [float(p) for p in result.probabilities], "ms": round(prepare_ms + result.compute_ms, 2)}


@app.task(base=CaseTask, bind=True, name="workers.tasks.assemble_image")
def assemble_image(self: Task, classified: list[dict], image_id: str) -> str:
    """Karyotype assignment, karyogram and report for one MCI; rows replaced, not appended."""
    started = time.time()
    ref = enter_stage(image_id, Stage.ASSEMBLE)
    if ref is None:
        return "skipped"
    store, karyotyper = get_store(), get_karyotyper()
    cell, segment_timings = load_cell(store, ref.keys)
    if len(classified) != len(cell.straightened):
        raise RuntimeError(f"{len(classified)} classifications for {len(cell.straightened)} ICIs")
    predictions = [
        prediction_from_probabilities(np.asarray(c["p"]), float(angle))
        for c, angle in zip(classified, cell.angles, strict=True)
    ]
    # classification time: the sum over the ICI tasks' shares (they may have run in parallel)
    timings = {**segment_timings, "classify": round(sum(c["ms"] for c in classified), 1)}
    assemble_started = time.perf_counter()
    result = karyotyper.assemble(ref.filename, cell, predictions, timings)
    result.timings_ms["assemble"] = round((time.perf_counter() - assemble_started) * 1000, 1)
    report, png = render_outputs(result)
    validate_report(report)
    store.put(ref.keys.karyogram, png, PNG)
    store.put(ref.keys.report, (json.dumps(report, indent=1) + "\n").encode(), JSON)
    with session_scope() as session:
        # the case row lock serialises the case's images and two deliveries of this task
        finished = finish_image(session, image_id, result, ref.keys)
    if finished == Finished.ERASED:  # deleted while this task wrote
        _remove_erased(store, ref.keys)  # outside the row lock
    if finished != Finished.SAVED:
        return "skipped"
    _record(self, ref.case_id, image_id, Stage.ASSEMBLE, started)
    return result.karyotype.iscn


class FailureTask(CaseTask):
    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        log.error("failure of image %s not recorded (%s); left for the sweeper: %s", args[0], exc, args[1])


@app.task(base=FailureTask, bind=True, name="workers.tasks.record_failure")
def record_failure(self: Task, image_id: str, reason: str) -> None:
    """Mark an image and its case failed with `reason` (a task's failure that came while the
    database was unreachable)."""
    fail_image(image_id, reason)
