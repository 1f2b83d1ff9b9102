"""Every change of a case's or an image's status, through one repository (db.status has the
statuses and the allowed moves). Each write locks the case row first, so that two images of a
case finishing at once, a failing task and a deletion are serialised on the case: the last
image to finish always sees the others done, and a deletion never races a failure.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.models import Case, CaseImage, ChromosomeRow, TaskRun
from db.session import session_scope
from db.status import ACTIVE, CaseStatus, ImageStatus, Stage, TaskRunStatus, check_move
from infra.case_objects import ImageKeys

if TYPE_CHECKING:  # the analysis's types; importing them loads torch, which the API's intake never needs
    from karyoflow.pipeline import KaryotypeResult

log = logging.getLogger("karyoflow.lifecycle")


@dataclass(frozen=True)
class ImageRef:
    """What a task needs to know of its image, read once in the stage transition."""

    case_id: str
    object_key: str  # the uploaded original
    filename: str
    keys: ImageKeys  # where the image's derived objects live
    stain: str = "auto"  # the case's stain as given: q, g or auto


class Finished(StrEnum):
    """What `finish_image` did."""

    SAVED = "saved"
    ALREADY_DONE = "already done"  # a second delivery of the assembly
    ERASED = "erased"  # the case was deleted (or is being deleted) meanwhile


def _locked_case_of(session: Session, image_id: str) -> tuple[Case | None, CaseImage | None]:
    """The image's case row locked, then the image row locked; (None, None) when gone."""
    case_id = session.scalar(select(CaseImage.case_id).where(CaseImage.id == image_id))
    if case_id is None:
        return None, None
    case = session.get(Case, case_id, with_for_update=True)
    return case, session.get(CaseImage, image_id, with_for_update=True, populate_existing=True)


def _move(case: Case, status: CaseStatus, now: datetime | None = None) -> None:
    check_move(case.status, status)
    if case.status != status:
        case.stage_started_at = now or datetime.now(UTC)
    case.status = status


def new_case(session: Session, clinic_id: int, reference: str, stain: str) -> Case:
    case = Case(clinic_id=clinic_id, reference=reference, status=CaseStatus.RECEIVED, stain=stain)
    session.add(case)
    session.flush()
    return case


def enter_stage(image_id: str, stage: Stage) -> ImageRef | None:
    """Move the image (and its case, unless the case is further on) into `stage`; None when the
    case is finished, being deleted or gone, or the image is done (a late duplicate delivery has
    nothing to do)."""
    with session_scope() as session:
        case, image = _locked_case_of(session, image_id)
        if case is None or image is None:
            log.warning("image %s no longer exists (its case was deleted): nothing to do", image_id)
            return None
        if case.status not in ACTIVE or image.status == ImageStatus.DONE:
            return None
        image.status = ImageStatus(stage.status)
        if ACTIVE.index(stage.status) >= ACTIVE.index(CaseStatus(case.status)):
            _move(case, stage.status)
        keys = ImageKeys.of(case.clinic_id, case.id, image.position)
        return ImageRef(case.id, image.object_key, image.filename, keys, case.stain)


def fail_image(image_id: str, reason: str) -> None:
    """A task failed for good: the image failed, and its case with the reason (unless the case
    is done or being deleted: DELETE turns a failed case `deleting` under the same row lock)."""
    with session_scope() as session:
        case, image = _locked_case_of(session, image_id)
        if case is None or image is None:
            return
        image.status = ImageStatus.FAILED
        if case.status in ACTIVE:
            _move(case, CaseStatus.FAILED)
            case.error, case.finished_at = reason, datetime.now(UTC)


def is_erased(image: CaseImage | None) -> bool:
    """The image's case is being deleted, or is gone."""
    return image is None or image.case.status == CaseStatus.DELETING


def case_erased(image_id: str) -> bool:
    with session_scope() as session:
        return is_erased(session.get(CaseImage, image_id))


def finish_image(session: Session, image_id: str, result: KaryotypeResult, keys: ImageKeys) -> Finished:
    """The image's results and chromosome rows (replaced, not appended); the case done, with its
    consensus karyotype, once every image is. The case row is locked before anything is read, so
    of two images finishing together the second waits and sees the first done."""
    case, image = _locked_case_of(session, image_id)
    if case is None or image is None or is_erased(image):
        return Finished.ERASED
    if image.status == ImageStatus.DONE:
        return Finished.ALREADY_DONE
    session.execute(delete(ChromosomeRow).where(ChromosomeRow.image_id == image_id))
    session.add_all(
        ChromosomeRow(
            image_id=image_id,
            number=chromosome.id,
            label=chromosome.label,
            class_index=chromosome.class_index,
            score=chromosome.score,
            detection_score=chromosome.detection_score,
            bbox=list(chromosome.bbox),
            ici_key=keys.ici(chromosome.candidate + 1),
            mask_key=keys.mask(chromosome.candidate + 1),
        )
        for chromosome in result.chromosomes
    )
    image.status = ImageStatus.DONE
    image.stain = result.stain
    image.chromosome_count = len(result.chromosomes)
    image.karyotype = result.karyotype.iscn
    image.abnormal = result.karyotype.abnormal
    image.report_key, image.karyogram_key = keys.report, keys.karyogram
    image.timings_ms = result.timings_ms
    session.flush()
    images = session.scalars(select(CaseImage).where(CaseImage.case_id == case.id)).all()
    if all(i.status == ImageStatus.DONE for i in images) and case.status in ACTIVE:
        from db.review import refresh_case_consensus  # the review's code loads the analysis (torch)

        refresh_case_consensus(case, images)  # the consensus of the images (karyoflow.consensus)
        _move(case, CaseStatus.DONE)
        case.error, case.finished_at = None, datetime.now(UTC)
    return Finished.SAVED


@dataclass(frozen=True)
class TaskRunRecord:
    """One task execution, as the task_runs table keeps it."""

    case_id: str
    image_id: str | None
    stage: Stage
    task_id: str
    worker: str
    started: float  # time.time()
    finished: float
    retries: int = 0
    error: str | None = None

    def row(self) -> TaskRun:
        return TaskRun(
            case_id=self.case_id,
            image_id=self.image_id,
            stage=self.stage,
            task_id=self.task_id,
            worker=self.worker,
            status=TaskRunStatus.OK if self.error is None else TaskRunStatus.FAILED,
            started_at=datetime.fromtimestamp(self.started, UTC),
            finished_at=datetime.fromtimestamp(self.finished, UTC),
            duration_ms=round((self.finished - self.started) * 1000, 1),
            retries=self.retries,
            error=self.error,
        )


def record_runs(runs: list[TaskRunRecord]) -> None:
    """Task runs, one row each, in one transaction (a batch of classifications is one write).
    A run whose case was deleted meanwhile is not recorded: there is nothing to record it for."""
    if not runs:
        return
    try:
        with session_scope() as session:
            session.add_all(run.row() for run in runs)
        return
    except IntegrityError:  # some case went away while its task ran: record the others alone
        pass
    for run in runs:
        try:
            with session_scope() as session:
                session.add(run.row())
        except IntegrityError:
            log.info("%s of image %s not recorded: its case no longer exists", run.stage, run.image_id)


def start_deleting(case: Case) -> None:
    """A finished case turns `deleting` (the caller holds its row lock); `IllegalTransition`
    while it is in work."""
    _move(case, CaseStatus.DELETING)


def erase_rows(session: Session, case_id: str) -> None:
    """The case's rows, children first: chromosomes, task runs, images, the case."""
    image_ids = select(CaseImage.id).where(CaseImage.case_id == case_id)
    session.execute(delete(ChromosomeRow).where(ChromosomeRow.image_id.in_(image_ids)))
    session.execute(delete(TaskRun).where(TaskRun.case_id == case_id))
    session.execute(delete(CaseImage).where(CaseImage.case_id == case_id))
    session.execute(delete(Case).where(Case.id == case_id))


def _requeue(case: Case, image_ids: list[str], max_sweeps: int, enqueue: Callable[[str], None], now: datetime) -> bool:
    """The images enqueued again from segmentation (the caller holds the case's row lock), or the
    case failed once it has been enqueued again `max_sweeps` times. True when enqueued."""
    if case.enqueue_count >= max_sweeps:
        case.error = f"stuck in '{case.status}' after {case.enqueue_count} attempts"
        _move(case, CaseStatus.FAILED, now)
        case.finished_at = now
        return False
    for image_id in image_ids:
        enqueue(image_id)
    case.enqueue_count += 1
    case.stage_started_at = now
    return True


def sweep_stuck(cutoff: datetime, max_sweeps: int, enqueue: Callable[[str], None], now: datetime) -> list[str]:
    """Cases in a stage since before `cutoff`: their unfinished images enqueued again from
    segmentation, or the case failed after `max_sweeps` attempts. Returns the re-enqueued ids."""
    swept = []
    with session_scope() as session:
        query = select(Case).where(Case.status.in_(ACTIVE), Case.stage_started_at < cutoff)
        for case in session.scalars(query.with_for_update(skip_locked=True)).all():
            pending = session.scalars(
                select(CaseImage.id).where(CaseImage.case_id == case.id, CaseImage.status != ImageStatus.DONE)
            ).all()
            if _requeue(case, list(pending), max_sweeps, enqueue, now):
                swept.append(case.id)
    return swept


def unfinished_images() -> dict[str, str]:
    """Every unfinished image of a case in work: image id -> case id."""
    with session_scope() as session:
        rows = session.execute(
            select(CaseImage.id, CaseImage.case_id)
            .join(Case, Case.id == CaseImage.case_id)
            .where(Case.status.in_(ACTIVE), CaseImage.status.not_in((ImageStatus.DONE, ImageStatus.FAILED)))
        ).all()
    return {image_id: case_id for image_id, case_id in rows}


def requeue_lost(lost: dict[str, str], max_sweeps: int, enqueue: Callable[[str], None], now: datetime) -> list[str]:
    """Images whose messages are lost (image id -> case id) enqueued again from segmentation,
    counted as one sweep of their case (which fails after `max_sweeps`). Images that finished
    meanwhile, and cases no longer in work, are left alone. Returns the re-enqueued case ids."""
    by_case: dict[str, list[str]] = {}
    for image_id, case_id in lost.items():
        by_case.setdefault(case_id, []).append(image_id)
    swept = []
    with session_scope() as session:
        query = select(Case).where(Case.id.in_(by_case), Case.status.in_(ACTIVE))
        for case in session.scalars(query.with_for_update(skip_locked=True)).all():
            still = session.scalars(
                select(CaseImage.id).where(
                    CaseImage.id.in_(by_case[case.id]),
                    CaseImage.status.not_in((ImageStatus.DONE, ImageStatus.FAILED)),
                )
            ).all()
            if still and _requeue(case, sorted(still), max_sweeps, enqueue, now):
                swept.append(case.id)
    return swept
