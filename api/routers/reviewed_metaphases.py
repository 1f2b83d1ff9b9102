"""Reviewed metaphases as training data: every metaphase of the clinic's signed-off cases
(excluded ones left out), with its chromosomes' outlines and the reviewer's labels;
`karyo cases export --labelme DIR` writes them as labelme files."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.auth import Caller, get_db, key_or_cookie_caller
from api.fields import DateTimeParam
from api.review import image_view
from api.review_schemas import ReviewedMetaphaseOut
from db.models import Case
from db.status import ImageStatus

router = APIRouter(prefix="/v1/reviewed-metaphases", tags=["review"])


@router.get("", response_model=list[ReviewedMetaphaseOut])
def list_reviewed_metaphases(
    caller: Annotated[Caller, Depends(key_or_cookie_caller)],
    db: Annotated[Session, Depends(get_db)],
    since: Annotated[DateTimeParam | None, Query(description="signed off at or after this time (RFC 3339)")] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="cases")] = 100,
) -> list[ReviewedMetaphaseOut]:
    """The metaphases of signed-off cases, oldest sign-off first (`since` pages on from the last
    one seen)."""
    query = select(Case).where(Case.clinic_id == caller.clinic_id, Case.review_status == "signed")
    if since is not None:
        query = query.where(Case.signed_at >= since)
    cases = db.scalars(query.order_by(Case.signed_at, Case.id).limit(limit)).all()
    out = []
    for case in cases:
        for image in case.images:
            if image.excluded or image.status != ImageStatus.DONE:
                continue
            view = image_view(image)
            out.append(
                ReviewedMetaphaseOut(
                    case_id=case.id,
                    reference=case.reference,
                    position=image.position,
                    filename=image.filename,
                    width=image.width,
                    height=image.height,
                    stain=image.stain,
                    karyotype=view.karyotype,
                    signed_by=case.signed_by,
                    signed_at=case.signed_at,
                    chromosomes=view.chromosomes,
                )
            )
    return out
