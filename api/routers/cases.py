"""Cases: upload MCIs (stored, then enqueued), follow them, fetch karyograms and reports,
query a clinic's case history, and erase a case."""

from __future__ import annotations

import base64
import json
import logging
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request, Response, UploadFile
from sqlalchemy import and_, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.admission import image_request_slot
from api.auth import Caller, current_caller, current_clinic, get_db, own_case
from api.errors import Unavailable, invalid_field, request_id
from api.fields import PRINTABLE, BooleanParam, CaseIdPath, DateTimeParam, column_length, text_problem
from api.intake import NewCase, take_in
from api.objects import get_store, read_object
from api.schemas import CaseCreated, CaseOut, CasePage, CaseSummary, ChromosomeOut, ImageOut
from api.uploads import read_upload
from db.lifecycle import erase_rows, start_deleting
from db.models import CASE_STATUSES, AuditEvent, Case, CaseImage
from db.status import CaseStatus, IllegalTransition
from infra.case_objects import case_prefix
from infra.settings import Settings, get_settings

router = APIRouter(prefix="/v1/cases", tags=["cases"])
log = logging.getLogger("karyoflow.api")


@router.post("", status_code=202, response_model=CaseCreated, responses={413: {}, 415: {}})
def create_case(
    request: Request,
    files: list[UploadFile],
    caller: Annotated[Caller, Depends(current_caller)],
    settings: Annotated[Settings, Depends(get_settings)],
    reference: Annotated[str, Form(max_length=column_length(Case.reference), pattern=PRINTABLE)] = "",
    stain: Annotated[
        Literal["q", "g", "auto"], Form(description="q (Q-band), g (G-band) or auto: detected per image")
    ] = "auto",
) -> CaseCreated:
    """One case from one or more MCIs. Every file is checked first; the case and its files are
    stored (database and object storage) before anything is enqueued. A bad file creates
    nothing. If the queue is down the case waits for the sweeper. A sync handler: the files are
    read here, then decoded, stored and enqueued by an intake process (api.intake), so that
    other requests are served meanwhile; uploads take their turn (api.admission)."""
    if not files:
        raise invalid_field(("body", "files"), "no files")
    if len(files) > settings.max_images_per_case:
        raise invalid_field(("body", "files"), f"at most {settings.max_images_per_case} images per case")
    with image_request_slot(settings):  # the files' bytes are read into memory only in turn
        images = tuple(
            read_upload(upload, position, max_bytes=settings.max_image_bytes) for position, upload in enumerate(files)
        )
        new = NewCase(caller.clinic_id, caller.api_key_id, reference, stain, images, request_id(request))
        return take_in(new, settings)


def _audit(caller: Caller, action: str, case: Case, detail: dict) -> AuditEvent:
    return AuditEvent(
        clinic_id=caller.clinic_id,
        api_key_id=caller.api_key_id,
        action=action,
        case_id=case.id,
        reference=case.reference,
        detail=detail,
    )


@router.get("/{case_id}", response_model=CaseOut)
def get_case(
    case_id: CaseIdPath, clinic_id: Annotated[int, Depends(current_clinic)], db: Annotated[Session, Depends(get_db)]
) -> CaseOut:
    case = own_case(db, clinic_id, case_id)
    return CaseOut(
        **CaseSummary.model_validate(case, from_attributes=True).model_dump(),
        images=[
            ImageOut(
                **{k: getattr(image, k) for k in ImageOut.model_fields if k != "chromosomes"},
                chromosomes=[ChromosomeOut.model_validate(c, from_attributes=True) for c in image.chromosomes],
            )
            for image in case.images
        ],
    )


@router.delete("/{case_id}", status_code=204, response_class=Response, responses={409: {}})
def delete_case(
    case_id: CaseIdPath, caller: Annotated[Caller, Depends(current_caller)], db: Annotated[Session, Depends(get_db)]
) -> Response:
    """Erase a finished (done or failed) case: its originals, ICIs, masks, karyograms and
    reports, then its rows (chromosomes, task runs, images, the case). The case is marked
    `deleting` first and its rows go last, so a deletion cut short (storage down: 503) stays
    visible and is finished by repeating the request; nothing of the case is served meanwhile."""
    clinic_id = caller.clinic_id
    case = own_case(db, clinic_id, case_id, lock=True)  # a failing task's handler waits for us
    try:
        start_deleting(case)
    except IllegalTransition as error:
        raise HTTPException(409, f"case {case_id} is {case.status}: delete it once it is done or failed") from error
    erased = _audit(caller, "case.deleted", case, {"images": len(case.images)})
    db.commit()
    try:
        get_store().delete_prefix(case_prefix(clinic_id, case_id))
    except Exception as error:
        raise Unavailable(
            f"object storage unavailable; case {case_id} is marked deleting: repeat the request"
        ) from error
    try:
        erase_rows(db, case_id)
        db.add(erased)  # in the transaction that removes the rows: recorded if and only if erased
        db.commit()
    except IntegrityError as error:  # a late task of a failed case wrote a row meanwhile
        db.rollback()
        raise HTTPException(
            409, f"work for case {case_id} is still finishing; it is marked deleting: repeat the request shortly"
        ) from error
    log.info("case %s of clinic %s deleted", case_id, clinic_id)
    return Response(status_code=204)


def _image(case: Case, position: int) -> CaseImage:
    for image in case.images:
        if image.position == position:
            return image
    raise HTTPException(404, f"case {case.id} has no image {position}")


@router.get("/{case_id}/karyogram", response_class=Response, responses={200: {"content": {"image/png": {}}}, 409: {}})
def get_karyogram(
    case_id: CaseIdPath,
    clinic_id: Annotated[int, Depends(current_clinic)],
    db: Annotated[Session, Depends(get_db)],
    image: Annotated[int, Query(ge=0, description="image position in the case")] = 0,
) -> Response:
    case = own_case(db, clinic_id, case_id)
    if case.status == CaseStatus.DELETING:
        raise HTTPException(409, f"case {case_id} is being deleted")
    row = _image(case, image)
    if row.karyogram_key is None:
        raise HTTPException(409, f"image {image} of case {case_id} is {row.status}, no karyogram yet")
    return Response(read_object(row.karyogram_key), media_type="image/png")


@router.get("/{case_id}/report", responses={409: {}})
def get_report(
    case_id: CaseIdPath, clinic_id: Annotated[int, Depends(current_clinic)], db: Annotated[Session, Depends(get_db)]
) -> dict:
    """The JSON reports of the case's images (schema: docs/report.md)."""
    case = own_case(db, clinic_id, case_id)
    if case.status != CaseStatus.DONE:
        raise HTTPException(409, f"case {case_id} is {case.status}, no report yet")
    return {"case": case.id, "karyotype": case.karyotype,
            "reports": [json.loads(read_object(i.report_key)) for i in case.images if i.report_key]}  # fmt: skip


def _encode_cursor(case: Case) -> str:
    return base64.urlsafe_b64encode(f"{case.created_at.isoformat()}|{case.id}".encode()).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        created, case_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|", 1)
        created_at = datetime.fromisoformat(created)
    except ValueError as error:  # also bad base64 (binascii.Error) and bad UTF-8
        raise invalid_field(("query", "cursor"), "not a cursor this service gave out (next_cursor)") from error
    if text_problem(case_id, column_length(Case.id)) is not None:
        raise invalid_field(("query", "cursor"), "not a cursor this service gave out (next_cursor)")
    return created_at, case_id


# query text compared with a column: printable and no longer than the column
def _text_query(column, description: str | None = None):  # noqa: ANN202 - FastAPI's Query
    return Query(max_length=column_length(column), pattern=PRINTABLE, description=description)


@router.get("", response_model=CasePage)
def list_cases(
    clinic_id: Annotated[int, Depends(current_clinic)],
    db: Annotated[Session, Depends(get_db)],
    status: Literal[CASE_STATUSES] | None = None,  # type: ignore[valid-type]
    since: DateTimeParam | None = None,
    until: DateTimeParam | None = None,
    karyotype: Annotated[str | None, _text_query(Case.karyotype, "ISCN, exactly")] = None,
    abnormal: BooleanParam | None = None,
    reference: Annotated[str | None, _text_query(Case.reference)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[
        str | None, Query(max_length=200, pattern=r"^[A-Za-z0-9_=-]*$", description="next_cursor of the page before")
    ] = None,
) -> CasePage:
    """The clinic's cases, newest first, with a cursor for the next page (no cursor, or an
    empty one: the first page)."""
    query = select(Case).where(Case.clinic_id == clinic_id)
    if status is not None:
        query = query.where(Case.status == status)
    if since is not None:
        query = query.where(Case.created_at >= since)
    if until is not None:
        query = query.where(Case.created_at < until)
    if karyotype is not None:
        query = query.where(Case.karyotype == karyotype)
    if abnormal is not None:
        query = query.where(Case.abnormal.is_(abnormal))
    if reference is not None:
        query = query.where(Case.reference == reference)
    if cursor:
        created, case_id = _decode_cursor(cursor)
        query = query.where(or_(Case.created_at < created, and_(Case.created_at == created, Case.id < case_id)))
    rows = db.scalars(query.order_by(Case.created_at.desc(), Case.id.desc()).limit(limit + 1)).all()
    items = [CaseSummary.model_validate(c, from_attributes=True) for c in rows[:limit]]
    return CasePage(items=items, next_cursor=_encode_cursor(rows[limit - 1]) if len(rows) > limit else None)
