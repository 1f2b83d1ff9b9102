"""A case's report as a PDF: consensus ISCN, cells analysed, each metaphase's call and
karyogram, model versions, reviewer and sign-off time ("not reviewed" until signed)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Response
from sqlalchemy.orm import Session

from api.auth import Caller, get_db, key_or_cookie_caller, own_case
from api.case_report import case_report
from db.status import CaseStatus
from karyoflow.case_report import case_report_pdf

router = APIRouter(prefix="/v1/cases", tags=["review"])


@router.get(
    "/{case_id}/report.pdf", response_class=Response, responses={200: {"content": {"application/pdf": {}}}, 409: {}}
)
def get_report_pdf(
    case_id: str,
    caller: Annotated[Caller, Depends(key_or_cookie_caller)],
    db: Annotated[Session, Depends(get_db)],
) -> Response:
    case = own_case(db, caller.clinic_id, case_id)
    if case.status != CaseStatus.DONE:
        raise HTTPException(409, f"case {case_id} is {case.status}: no report yet")
    pdf = case_report_pdf(case_report(db, case))
    name = f"karyoflow-{case.reference or case.id}.pdf".replace('"', "")
    return Response(pdf, media_type="application/pdf", headers={"Content-Disposition": f'inline; filename="{name}"'})
