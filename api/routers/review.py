"""A case's review: the metaphases with their chromosomes' outlines and labels, corrections,
exclusion, sign-off and reopen; the current and the machine's karyogram of each metaphase and
its original image. Answers the X-API-Key header and the review pages' login cookie alike."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Response
from sqlalchemy.orm import Session

from api.auth import Caller, get_db, key_or_cookie_caller, own_case
from api.objects import read_object
from api.review import correct, image_of, png_bytes, review_view
from api.review_schemas import CorrectionIn, ReopenIn, ReviewOut, SignOffIn
from db.models import Case
from db.review import ReviewStateError, audit_event, reopen, sign_off
from karyoflow.pipeline import grey_from_bytes

router = APIRouter(prefix="/v1/cases", tags=["review"])
PNG = {200: {"content": {"image/png": {}}}}


@router.get("/{case_id}/review", response_model=ReviewOut)
def get_review(
    case_id: str,
    caller: Annotated[Caller, Depends(key_or_cookie_caller)],
    db: Annotated[Session, Depends(get_db)],
    outlines: bool = True,
) -> ReviewOut:
    """The case's review: consensus (cells analysed, cell lines, non-clonal changes, why it
    needs review), each metaphase's call (the machine's and the current one) and chromosomes
    with outlines, the sign-off and the audit trail."""
    return review_view(db, own_case(db, caller.clinic_id, case_id), outlines)


@router.post("/{case_id}/corrections", response_model=ReviewOut, responses={409: {}, 422: {}})
def post_correction(
    case_id: str,
    correction: CorrectionIn,
    caller: Annotated[Caller, Depends(key_or_cookie_caller)],
    db: Annotated[Session, Depends(get_db)],
) -> ReviewOut:
    """Correct one metaphase: relabel a chromosome, delete a false detection, split one into
    two, merge two into one, or exclude (include) the metaphase. The karyogram and report are
    re-rendered (the machine's are kept), the consensus recomputed and the change audited (who,
    when, before -> after). 409 once the case is signed off."""
    case = own_case(db, caller.clinic_id, case_id, lock=True)
    correct(db, case, correction, caller)
    return review_view(db, case)


def _change_review_state(
    db: Session, caller: Caller, case_id: str, action: str, reviewer: str, change: Callable[[Case], dict]
) -> ReviewOut:
    """Lock the case, apply `change` (a sign-off or a reopen; it returns the audit detail), audit
    it under `action` and commit; 409 where the case's review state does not allow it."""
    case = own_case(db, caller.clinic_id, case_id, lock=True)
    try:
        detail = change(case)
    except ReviewStateError as error:
        raise HTTPException(409, str(error)) from error
    db.add(audit_event(case, caller.api_key_id, action, detail, reviewer))
    db.commit()
    return review_view(db, case)


@router.post("/{case_id}/sign-off", response_model=ReviewOut, responses={409: {}})
def post_sign_off(
    case_id: str,
    body: SignOffIn,
    caller: Annotated[Caller, Depends(key_or_cookie_caller)],
    db: Annotated[Session, Depends(get_db)],
) -> ReviewOut:
    """The reviewer signs the case: it is locked (corrections answer 409) until reopened."""

    def sign(case: Case) -> dict:
        sign_off(case, body.reviewer)
        return {"karyotype": case.karyotype, "cells": case.cells_analysed}

    return _change_review_state(db, caller, case_id, "case.signed", body.reviewer, sign)


@router.post("/{case_id}/reopen", response_model=ReviewOut, responses={409: {}})
def post_reopen(
    case_id: str,
    body: ReopenIn,
    caller: Annotated[Caller, Depends(key_or_cookie_caller)],
    db: Annotated[Session, Depends(get_db)],
) -> ReviewOut:
    """Open a signed case again, with a reason (audited, with who had signed it and when)."""

    def open_again(case: Case) -> dict:
        signed = {"signed_by": case.signed_by, "signed_at": case.signed_at.isoformat() if case.signed_at else None}
        reopen(case)
        return {"reason": body.reason, **signed}

    return _change_review_state(db, caller, case_id, "case.reopened", body.reviewer, open_again)


@router.get("/{case_id}/images/{position}/karyogram", response_class=Response, responses=PNG)
def get_image_karyogram(
    case_id: str,
    position: int,
    caller: Annotated[Caller, Depends(key_or_cookie_caller)],
    db: Annotated[Session, Depends(get_db)],
    version: Annotated[
        Literal["current", "original"], Query(description="current: the reviewed one where corrected")
    ] = "current",
) -> Response:
    image = image_of(own_case(db, caller.clinic_id, case_id), position)
    key = (image.reviewed_karyogram_key if version == "current" else None) or image.karyogram_key
    if key is None:
        raise HTTPException(409, f"image {position} is {image.status}: no karyogram yet")
    return Response(read_object(key), media_type="image/png", headers={"Cache-Control": "no-store"})


@router.get("/{case_id}/images/{position}/original", response_class=Response, responses=PNG)
def get_original(
    case_id: str,
    position: int,
    caller: Annotated[Caller, Depends(key_or_cookie_caller)],
    db: Annotated[Session, Depends(get_db)],
) -> Response:
    """The metaphase as uploaded, as PNG (a browser shows no TIFF)."""
    image = image_of(own_case(db, caller.clinic_id, case_id), position)
    data = read_object(image.object_key)
    if image.content_type != "image/png":
        data = png_bytes(grey_from_bytes(data))
    return Response(data, media_type="image/png")
