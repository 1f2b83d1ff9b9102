"""A case's review on the stored case: a correction read from the request, applied to the
metaphase (karyoflow.review), its karyogram and report re-rendered next to the machine's (which
are kept), the rows replaced and the consensus recomputed (db.review), the change audited;
and the case's review as the pages and clients see it.

Outputs of a correction go under the image's prefix, per revision (`review/<n>/karyogram.png`,
`review/<n>/report.json`), and new chromosomes' images under `review/icis|masks/<number>.png`;
the rows point at them only once the transaction commits, so a correction cut short leaves the
case as it was (an unreferenced object at most, erased with the case).
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

import numpy as np
from fastapi import HTTPException
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.auth import Caller
from api.objects import get_store, read_object
from api.review_schemas import (
    ConsensusOut,
    CorrectionIn,
    ReviewChromosomeOut,
    ReviewImageOut,
    ReviewOut,
)
from api.schemas import AuditEventOut
from db.models import AuditEvent, Case, CaseImage
from db.review import (
    ReviewStateError,
    audit_event,
    case_consensus,
    check_editable,
    current_karyotype,
    refresh_case_consensus,
    reviewed_chromosomes,
    save_edit,
)
from db.status import ImageStatus
from infra.case_objects import ImageKeys
from karyoflow.karyogram import render_karyogram
from karyoflow.pipeline import grey_from_bytes
from karyoflow.report import validate_report
from karyoflow.review import (
    Delete,
    Edit,
    EditError,
    Geometry,
    MergeTwo,
    Relabel,
    SplitInTwo,
    apply_edit,
    mask_from_rle,
    outline,
    reviewed_report,
)
from karyoflow.stain import to_bright_on_dark


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def image_of(case: Case, position: int) -> CaseImage:
    for image in case.images:
        if image.position == position:
            return image
    raise HTTPException(404, f"case {case.id} has no image {position}")


def current_report(image: CaseImage) -> dict:
    """The image's report as it stands: the last reviewed one, else the machine's."""
    key = image.reviewed_report_key or image.report_key
    if key is None:
        raise HTTPException(409, f"image {image.position} is {image.status}: no report yet")
    return json.loads(read_object(key))


def edit_from(request: CorrectionIn) -> Edit:
    """The correction a request asks for; 422 with what is missing."""

    def need(value, what: str, count: int | None = None):
        if value is None or (count is not None and len(value) != count):
            raise HTTPException(422, f"{request.action} needs {what}")
        return value

    if request.action == "relabel":
        return Relabel(need(request.chromosome, "`chromosome`"), need(request.label, "`label`"))
    if request.action == "delete":
        return Delete(need(request.chromosome, "`chromosome`"))
    if request.action == "split":
        labels = need(request.labels, "`labels`: the two pieces' labels", 2)
        return SplitInTwo(need(request.chromosome, "`chromosome`"), (labels[0], labels[1]))
    first, second = need(request.chromosomes, "`chromosomes`: the two to merge", 2)
    return MergeTwo((first, second), need(request.label, "`label`"))


def _geometry(image: CaseImage, report: dict) -> Geometry:
    """The metaphase in the working representation and the current chromosomes' masks."""
    stain = image.stain or report.get("stain", "q")
    working = to_bright_on_dark(grey_from_bytes(read_object(image.object_key)), stain)
    masks = {entry["id"]: mask_from_rle(entry["mask"]) for entry in report["chromosomes"] if "mask" in entry}
    return Geometry(working, masks, stain)


def _karyogram(image: CaseImage, report: dict, straightened: dict[int, np.ndarray]) -> bytes:
    chromosomes = [(c["label"], straightened[c["id"]], c["low_confidence"]) for c in report["chromosomes"]]
    page = render_karyogram(
        chromosomes,
        title=f"{image.filename} (reviewed)",
        karyotype=report["karyotype"],
        count=len(chromosomes),
        stain=report.get("stain", "q"),
    )
    buffer = io.BytesIO()
    page.save(buffer, format="PNG")
    return buffer.getvalue()


def correct(db: Session, case: Case, request: CorrectionIn, caller: Caller) -> None:
    """Apply one correction and commit it with its audit event; 409 when the case is signed off
    or not finished, 422 when the correction does not fit the metaphase."""
    try:
        check_editable(case)
    except ReviewStateError as error:
        raise HTTPException(409, str(error)) from error
    image = image_of(case, request.image)
    if request.action in ("exclude", "include"):
        _set_excluded(db, case, image, request.action == "exclude", caller, request.reviewer)
        return
    report = current_report(image)
    edit = edit_from(request)
    geometry = _geometry(image, report) if isinstance(edit, SplitInTwo | MergeTwo) else None
    try:
        outcome = apply_edit(reviewed_chromosomes(image), edit, geometry)
    except EditError as error:
        raise HTTPException(422, str(error)) from error
    store = get_store()
    image_keys = ImageKeys.of(case.clinic_id, case.id, image.position)
    made_keys = {}
    for number, made in outcome.made.items():
        keys = (image_keys.reviewed_ici(number), image_keys.reviewed_mask(number))
        store.put(keys[0], png_bytes(made.straightened), "image/png")
        store.put(keys[1], png_bytes(made.mask.astype(np.uint8) * 255), "image/png")
        made_keys[number] = keys
    revision = image.revision + 1
    at = datetime.now(UTC)
    review = {"revision": revision, "reviewed_by": request.reviewer, "at": at.isoformat(),
              "machine_karyotype": image.karyotype}  # fmt: skip
    report = reviewed_report(report, outcome.chromosomes, outcome.made, review)
    validate_report(report)
    rows = {row.number: row for row in image.chromosomes}
    straightened = {number: made.straightened for number, made in outcome.made.items()}
    for c in outcome.chromosomes:
        if c.number not in straightened:
            straightened[c.number] = grey_from_bytes(read_object(rows[c.number].ici_key))
    karyogram_key, report_key = image_keys.reviewed_karyogram(revision), image_keys.reviewed_report(revision)
    store.put(karyogram_key, _karyogram(image, report, straightened), "image/png")
    store.put(report_key, (json.dumps(report, indent=1) + "\n").encode(), "application/json")
    metaphase_before, consensus_before = current_karyotype(image), case.karyotype
    save_edit(db, image, outcome, made_keys)
    image.reviewed_karyotype, image.reviewed_karyogram_key, image.reviewed_report_key = (
        report["karyotype"], karyogram_key, report_key)  # fmt: skip
    image.revision = revision
    _record(db, case, caller, request, outcome.before, outcome.after, metaphase_before, consensus_before)


def _set_excluded(db: Session, case: Case, image: CaseImage, excluded: bool, caller: Caller, reviewer: str) -> None:
    if image.excluded == excluded:
        raise HTTPException(422, f"image {image.position} is already {'excluded' if excluded else 'included'}")
    if image.status != ImageStatus.DONE:
        raise HTTPException(409, f"image {image.position} is {image.status}: nothing to exclude")
    image.excluded = excluded
    request = CorrectionIn(reviewer=reviewer, image=image.position, action="exclude" if excluded else "include")
    _record(db, case, caller, request, {"excluded": not excluded}, {"excluded": excluded}, None, case.karyotype)


def _record(
    db: Session,
    case: Case,
    caller: Caller,
    request: CorrectionIn,
    before: dict,
    after: dict,
    metaphase_before: str | None,
    consensus_before: str | None,
) -> None:
    """The consensus recomputed, the case in review, the change audited; all in one commit."""
    image = image_of(case, request.image)
    refresh_case_consensus(case, case.images)
    case.review_status = "in_review"
    detail = {"image": request.image, "action": request.action, "before": before, "after": after,
              "consensus": {"before": consensus_before, "after": case.karyotype}}  # fmt: skip
    if metaphase_before is not None:
        detail["metaphase"] = {"before": metaphase_before, "after": current_karyotype(image)}
    db.add(audit_event(case, caller.api_key_id, "case.corrected", detail, request.reviewer))
    db.commit()


def _chromosomes_out(image: CaseImage, report: dict | None) -> list[ReviewChromosomeOut]:
    masks = {entry["id"]: entry.get("mask") for entry in (report or {}).get("chromosomes", [])}
    return [
        ReviewChromosomeOut(
            number=c.number,
            label=c.label,
            score=c.score,
            bbox=list(c.bbox) if c.bbox else None,
            origin=c.origin,
            machine_label=c.machine_label,
            outline=outline(mask_from_rle(masks[c.number])) if masks.get(c.number) else [],
        )
        for c in reviewed_chromosomes(image)
    ]


def image_view(image: CaseImage, with_outlines: bool = True) -> ReviewImageOut:
    report = current_report(image) if with_outlines and image.status == ImageStatus.DONE else None
    return ReviewImageOut(
        position=image.position,
        filename=image.filename,
        status=image.status,
        width=image.width,
        height=image.height,
        stain=image.stain,
        excluded=image.excluded,
        machine_karyotype=image.karyotype,
        karyotype=current_karyotype(image),
        revision=image.revision,
        chromosomes=_chromosomes_out(image, report),
    )


def consensus_view(case: Case) -> ConsensusOut | None:
    result = case_consensus(case.images)
    if result is None:
        return None
    return ConsensusOut(
        karyotype=result.karyotype,
        cells=result.cells,
        cell_lines=result.cell_lines,
        clonal_changes=result.clonal_changes,
        non_clonal=result.non_clonal,
        needs_review=result.needs_review,
        reasons=result.reasons,
    )


def review_view(db: Session, case: Case, with_outlines: bool = True) -> ReviewOut:
    events = db.scalars(
        select(AuditEvent)
        .where(AuditEvent.clinic_id == case.clinic_id, AuditEvent.case_id == case.id)
        .order_by(AuditEvent.at.desc(), AuditEvent.id.desc())
    ).all()
    return ReviewOut(
        case_id=case.id,
        reference=case.reference,
        status=case.status,
        review_status=case.review_status,
        signed_by=case.signed_by,
        signed_at=case.signed_at,
        consensus=consensus_view(case),
        images=[image_view(image, with_outlines) for image in case.images],
        audit=[AuditEventOut.model_validate(event, from_attributes=True) for event in events],
    )
