"""A new case's work: each image decoded and checked in full, hashed and stored, the case's rows
committed, its images enqueued. By default it runs in an intake process of the API's own
(`KARYO_INTAKE_PROCESSES`, default 1 per API process; 0 runs it in the request's thread).

Why a process: that work holds the interpreter for about 8 ms of every upload (the decode, the
ORM's inserts and commit, the storage and queue clients), and every other request of the API
process, a case listing or a page, waits for it. Paired on one stack, a listing during five
concurrent uploads took 1.2-1.9 x its idle p95 with the intake process against 2.1-2.7 x with
the work in the request's thread (docs/service.md, "Latency during uploads"). The API process
keeps only what is tied to the request: parsing the form, reading each file, the name and size
checks.

The intake process imports no analysis code (torch stays out: about 80 MB of private memory
instead of about 450 MB) and enqueues the segmentation by its task name.

What crosses the process boundary is plain data: a `NewCase` in, a `CaseCreated` or a `Refusal`
(status, detail, refused fields) back, which the API raises as the same error it would have
raised itself. The intake process logs its own errors with the request's id."""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError
from minio.error import S3Error
from sqlalchemy.exc import DataError

from api.errors import (
    BROKER_DOWN,
    DATABASE_DOWN,
    STORAGE_BUSY_CODES,
    STORAGE_DOWN,
    UNSTORABLE_VALUE,
    Unavailable,
    unavailable_detail,
)
from api.objects import get_store
from api.readiness import describe_error
from api.schemas import CaseCreated
from api.uploads import UploadedImage, check_image
from db.lifecycle import new_case
from db.models import AuditEvent, CaseImage
from db.session import session_scope
from infra.case_objects import ImageKeys, case_prefix
from infra.settings import Settings, get_settings

log = logging.getLogger("karyoflow.api.intake")
MIN_MCI_SIDE = 64  # pixels; a metaphase is hundreds wide
# an upload does not wait for Redis as long as a worker does: about 3 s, then the case is the
# sweeper's
ENQUEUE_RETRY_POLICY = {"max_retries": 3, "interval_start": 0.5, "interval_step": 0.5, "interval_max": 1}


@dataclass(frozen=True)
class NewCase:
    """One upload as the API received it: who sent it, its form fields and its files' bytes."""

    clinic_id: int
    api_key_id: int
    reference: str
    stain: str
    images: tuple[UploadedImage, ...]
    request_id: str = "-"


@dataclass(frozen=True)
class Refusal:
    """An upload refused in the intake process, as the API answers it."""

    status: int
    detail: str
    errors: tuple[dict, ...] = ()  # refused fields, answered as FastAPI's own 422

    def exception(self) -> Exception:
        if self.errors:
            return RequestValidationError(list(self.errors))
        if self.status == 503:
            return Unavailable(self.detail)
        if self.status >= 500:
            return RuntimeError(self.detail)  # a bug: answered 500 with the request id
        return HTTPException(self.status, self.detail)


def enqueue(image_id: str) -> None:
    from workers.app import SEGMENT_IMAGE, app  # the queue's client only: no analysis code

    app.send_task(SEGMENT_IMAGE, args=(image_id,), retry_policy=ENQUEUE_RETRY_POLICY)


def store_case(new: NewCase, settings: Settings) -> CaseCreated:
    """Check every image, then store the case and its files (object storage and database)
    before anything is enqueued. A bad file creates nothing. If the queue is down the case
    waits for the sweeper. Raises the HTTP errors the API answers."""
    checked = [
        check_image(image, max_pixels=settings.max_image_pixels, min_side=MIN_MCI_SIDE, kind="a metaphase image")
        for image in new.images
    ]
    store = get_store()
    with session_scope() as db:
        case = new_case(db, new.clinic_id, new.reference, new.stain)
        db.add(
            AuditEvent(
                clinic_id=new.clinic_id,
                api_key_id=new.api_key_id,
                action="case.created",
                case_id=case.id,
                reference=case.reference,
                detail={"images": len(checked)},
            )
        )
        images = []
        try:
            for position, item in enumerate(checked):
                key = ImageKeys.of(new.clinic_id, case.id, position).original(item.suffix)
                store.put(key, item.data, item.content_type)
                image = CaseImage(
                    case_id=case.id,
                    position=position,
                    filename=item.filename,
                    content_type=item.content_type,
                    object_key=key,
                    sha256=item.sha256,
                    width=item.width,
                    height=item.height,
                )
                db.add(image)
                images.append(image)
            db.commit()
        except Exception as error:
            db.rollback()
            try:
                store.delete_prefix(case_prefix(new.clinic_id, case.id))
            except Exception:  # storage itself is down: nothing readable was left either
                log.exception("request %s: could not clean up after a failed upload", new.request_id)
            if isinstance(error, (*STORAGE_DOWN, S3Error)):
                raise Unavailable("object storage unavailable, nothing was stored; try again shortly") from error
            raise  # the database's errors and bugs: mapped like the API's own (api.errors)
        image_ids = [image.id for image in images]
        created = CaseCreated(id=case.id, status=case.status, images=len(image_ids))
    for image_id in image_ids:
        try:
            enqueue(image_id)
        except Exception as error:  # the broker is down: the case is safe in the database
            log.warning("enqueue of %s failed (%s); the sweeper will retry", image_id, error)
    return created


def refusal_of(error: Exception, request_id: str) -> Refusal:
    """The answer the API's error mapping (api.errors) gives `error`, as plain data; the cause of
    a 503 or a 500 is logged here, where it happened."""
    if isinstance(error, HTTPException):
        return Refusal(error.status_code, str(error.detail))
    if isinstance(error, RequestValidationError):
        fields = ({k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in error.errors())
        return Refusal(422, "invalid request", tuple(fields))
    if isinstance(error, DataError):
        log.warning("request %s: the database refused a value: %s", request_id, describe_error(error.orig or error))
        return Refusal(422, UNSTORABLE_VALUE)
    if isinstance(error, Unavailable):
        log.error("request %s: %s (%s)", request_id, error.public, describe_error(error.__cause__ or error))
        return Refusal(503, error.public)
    storage_busy = isinstance(error, S3Error) and error.code in STORAGE_BUSY_CODES
    for down, what in ((DATABASE_DOWN, "database"), (STORAGE_DOWN, "object storage"), (BROKER_DOWN, "task queue")):
        if isinstance(error, down) or (storage_busy and what == "object storage"):
            log.error("request %s: %s unavailable: %s", request_id, what, describe_error(error))
            return Refusal(503, unavailable_detail(what))
    log.error("request %s: the upload failed", request_id, exc_info=error)
    return Refusal(500, f"the upload failed in the intake process (request {request_id}; its log has the details)")


def _answer(new: NewCase) -> CaseCreated | Refusal:
    """The intake process's entry: never raises, so that nothing unpicklable crosses back."""
    try:
        return store_case(new, get_settings())
    except Exception as error:
        return refusal_of(error, new.request_id)


def _start_intake_process(environment: dict[str, str]) -> None:
    """Each intake process reads the API's configuration as the API had it when it started the
    pool, logs like it, and imports the queue's client before the first upload."""
    for name in [name for name in os.environ if name.startswith("KARYO_")]:
        del os.environ[name]
    os.environ.update(environment)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s[intake]: %(message)s")
    import workers.app  # noqa: F401 - the Celery app and its routes, loaded once


def _ready() -> int:
    return os.getpid()


def _karyo_environment() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if name.startswith("KARYO_")}


class IntakePool:
    """The API process's intake processes (spawned, never forked: the API runs threads), started
    anew when the configuration they were started with changes, or when one died."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._executor: ProcessPoolExecutor | None = None
        self._key: tuple | None = None

    def executor(self, processes: int) -> ProcessPoolExecutor:
        environment = _karyo_environment()
        key = (processes, tuple(sorted(environment.items())))
        with self._lock:
            if self._executor is None or self._key != key:
                if self._executor is not None:
                    self._executor.shutdown(wait=False, cancel_futures=True)
                self._executor = ProcessPoolExecutor(
                    max_workers=processes,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_start_intake_process,
                    initargs=(environment,),
                )
                self._key = key
            return self._executor

    def start(self, processes: int) -> None:
        """Spawn the processes now rather than at the first upload (their imports take seconds)."""
        if processes > 0:
            executor = self.executor(processes)
            for _ in range(processes):
                executor.submit(_ready)

    def discard(self, broken: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._executor is broken:
                self._executor = None
        broken.shutdown(wait=False, cancel_futures=True)

    def shutdown(self) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)


pool = IntakePool()


def take_in(new: NewCase, settings: Settings) -> CaseCreated:
    """Store and enqueue a new case, in an intake process unless `intake_processes` is 0.
    Blocking: call it from a sync handler (the wait releases the interpreter)."""
    if settings.intake_processes == 0:
        return store_case(new, settings)
    executor = pool.executor(settings.intake_processes)
    try:
        future = executor.submit(_answer, new)
    except BrokenProcessPool:  # an intake process died while idle: none of this upload ran
        pool.discard(executor)
        executor = pool.executor(settings.intake_processes)
        future = executor.submit(_answer, new)
    try:
        answer = future.result()
    except BrokenProcessPool as error:  # the intake process died during this upload
        pool.discard(executor)
        raise Unavailable("the upload was interrupted: if its case is not listed, send it again") from error
    if isinstance(answer, Refusal):
        raise answer.exception()
    return answer
