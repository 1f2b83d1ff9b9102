"""A case's review in SQL: the consensus over its analysed images, the reviewed chromosomes of
an image, the rows a correction leaves, sign-off and reopen, and their audit events.

The machine's results (the image's `karyotype`, `karyogram_key`, `report_key`) are never
overwritten: a correction sets the image's `reviewed_*` columns and replaces its chromosome
rows; the case's `karyotype` is the consensus of what stands now (reviewed calls where there
are, the machine's elsewhere; excluded images left out).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import delete
from sqlalchemy.orm import Session

from db.models import AuditEvent, Case, CaseImage, ChromosomeRow
from db.status import CaseStatus, ImageStatus
from karyoflow.consensus import CellKaryotype, Consensus, consensus
from karyoflow.labels import LABEL_TO_INDEX
from karyoflow.review import EditOutcome, ReviewedChromosome

KARYOTYPE_COLUMN = Case.karyotype.type.length  # cases.karyotype is String(200)
REVIEW_STATUSES = ("unreviewed", "in_review", "signed")


class ReviewStateError(Exception):
    """The case is not in a state that allows the action (signed, not done, not signed)."""


def current_karyotype(image: CaseImage) -> str | None:
    """The image's call as it stands: the reviewer's where corrected, else the machine's."""
    return image.reviewed_karyotype or image.karyotype


def analysed_cells(images: Sequence[CaseImage]) -> list[CellKaryotype]:
    """The cells the consensus counts: finished, not excluded, with a call; named by position."""
    return [
        CellKaryotype(str(image.position), current_karyotype(image))
        for image in images
        if image.status == ImageStatus.DONE and not image.excluded and current_karyotype(image)
    ]


def case_consensus(images: Sequence[CaseImage]) -> Consensus | None:
    cells = analysed_cells(images)
    return consensus(cells) if cells else None


def fit_karyotype_column(text: str) -> str:
    """A mosaic of many cell lines cut to whole lines that fit `cases.karyotype`."""
    if len(text) <= KARYOTYPE_COLUMN:
        return text
    lines = text.split("/")
    while len("/".join(lines)) + 4 > KARYOTYPE_COLUMN:
        lines.pop()
    return "/".join(lines) + "/..."


def refresh_case_consensus(case: Case, images: Sequence[CaseImage]) -> Consensus | None:
    """Set the case's karyotype, abnormal flag, review reasons and cells analysed from its
    images' current calls; every image excluded leaves no karyotype and a reason."""
    result = case_consensus(images)
    if result is None:
        case.karyotype, case.abnormal, case.cells_analysed = None, None, 0
        case.needs_review, case.review_reasons = True, ["no metaphase analysed"]
        return None
    case.karyotype, case.abnormal = fit_karyotype_column(result.karyotype), result.abnormal
    case.needs_review, case.review_reasons, case.cells_analysed = result.needs_review, result.reasons, result.cells
    return result


def reviewed_chromosomes(image: CaseImage) -> list[ReviewedChromosome]:
    return [
        ReviewedChromosome(
            number=row.number,
            label=row.label,
            # a label only the reviewer gave has no classifier probability
            score=row.score if row.origin == "detected" and row.machine_label is None else None,
            bbox=tuple(row.bbox) if row.bbox else None,
            origin=row.origin,
            machine_label=row.machine_label,
        )
        for row in image.chromosomes
    ]


def save_edit(session: Session, image: CaseImage, outcome: EditOutcome, made_keys: dict[int, tuple[str, str]]) -> None:
    """The image's chromosome rows after `outcome`: removed rows deleted, changed rows updated,
    made ones added with their stored ICI and mask keys (`made_keys`: number -> (ici, mask))."""
    rows = {row.number: row for row in image.chromosomes}
    if outcome.removed:
        session.execute(
            delete(ChromosomeRow).where(ChromosomeRow.image_id == image.id, ChromosomeRow.number.in_(outcome.removed))
        )
    for chromosome in outcome.chromosomes:
        row = rows.get(chromosome.number)
        if row is None:
            ici_key, mask_key = made_keys[chromosome.number]
            session.add(
                ChromosomeRow(
                    image_id=image.id,
                    number=chromosome.number,
                    label=chromosome.label,
                    class_index=LABEL_TO_INDEX[chromosome.label] + 1,
                    score=0.0,  # no classifier probability: the reviewer made it
                    detection_score=0.0,
                    bbox=list(chromosome.bbox),
                    ici_key=ici_key,
                    mask_key=mask_key,
                    origin=chromosome.origin,
                )
            )
        elif row.label != chromosome.label:
            row.label, row.class_index = chromosome.label, LABEL_TO_INDEX[chromosome.label] + 1
            row.machine_label = chromosome.machine_label
    session.flush()
    session.expire(image, ["chromosomes"])


def audit_event(case: Case, api_key_id: int | None, action: str, detail: dict, actor: str | None = None) -> AuditEvent:
    return AuditEvent(
        clinic_id=case.clinic_id,
        api_key_id=api_key_id,
        action=action,
        case_id=case.id,
        reference=case.reference,
        detail=detail,
        actor=actor,
    )


def check_editable(case: Case) -> None:
    if case.status != CaseStatus.DONE:
        raise ReviewStateError(f"case {case.id} is {case.status}: only a finished case is reviewed")
    if case.review_status == "signed":
        raise ReviewStateError(f"case {case.id} was signed off by {case.signed_by}: reopen it before changing anything")


def sign_off(case: Case, reviewer: str) -> None:
    check_editable(case)
    case.review_status, case.signed_by, case.signed_at = "signed", reviewer, datetime.now(UTC)


def reopen(case: Case) -> None:
    if case.review_status != "signed":
        raise ReviewStateError(f"case {case.id} is not signed off: nothing to reopen")
    case.review_status, case.signed_by, case.signed_at = "in_review", None, None
